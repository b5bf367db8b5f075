"""CLIP and T5 tokenizers built offline from the emoji names (no download).

The byte-level BPE of CLIP (same normaliser, pre-tokeniser, ``</w>`` word ends, ``<|startoftext|>`` /
``<|endoftext|>``) with its merges learnt by the ``tokenizers`` library from the names of
``emoji-test.txt``: most words become one token, others split into learnt pieces down to single bytes (every
emoji name, held-out ones included, encodes without the unknown token; a word ending in a byte no training
word ends in gets ``<|endoftext|>``, CLIP's unknown token).
Saved, it is an ordinary ``CLIPTokenizer`` folder that ``StableDiffusionPipeline`` loads.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer, T5Tokenizer

VOCAB_SIZE = 2000
MAX_LENGTH = 24  # the longest emoji name is 21 tokens with its start and end tokens


def build_tokenizer(names: list[str], vocab_size: int = VOCAB_SIZE, max_length: int = MAX_LENGTH):
    """A ``CLIPTokenizer`` whose BPE merges are learnt from ``names``: the same tokens for the same list, but merges
    learnt with equal counts may get their ids in another order, so a model goes with its saved tokenizer."""
    clip = CLIPTokenizer()  # empty vocabulary: only its normaliser and pre-tokeniser are used
    bpe = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    bpe.normalizer, bpe.pre_tokenizer = clip.backend_tokenizer.normalizer, clip.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(sorted(set(names)), trainer)
    model = json.loads(bpe.to_str())["model"]
    return CLIPTokenizer(
        vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]], model_max_length=max_length
    )


def build_t5_tokenizer(names: list[str], alphabet: str = "", vocab_size: int = VOCAB_SIZE):
    """A ``T5Tokenizer`` in T5's own shape (Unigram over whitespace-split words with ``▁`` marking word starts;
    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2; no extra ids) learnt from ``names``; ``alphabet`` adds characters to those
    of ``names`` so that text using them encodes without ``<unk>``."""
    t5 = T5Tokenizer(extra_ids=0)  # only its pre-tokeniser and decoder are used
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer, unigram.decoder = t5.backend_tokenizer.pre_tokenizer, t5.backend_tokenizer.decoder
    characters = sorted(set("".join(names) + alphabet) - {" "})
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=characters,
        show_progress=False,
    )
    unigram.train_from_iterator(sorted(set(names)), trainer)
    vocab = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0)
