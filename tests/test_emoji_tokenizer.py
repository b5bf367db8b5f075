"""The offline tokenizers: CLIP's byte-level BPE and T5's Unigram, learnt from emoji names."""

from hiresdiff.models.emoji_tokenizer import build_t5_tokenizer, build_tokenizer

NAMES = ["grinning face", "cat face", "flag: Åland Islands", "woman’s hat", "red heart", "piñata", "keycap: 1"]


def test_clip_tokenizer_encodes_unseen_text_by_bytes_and_reloads(tmp_path):
    from transformers import CLIPTokenizer

    tokenizer = build_tokenizer(NAMES)
    for text in NAMES + ["hat face", "grinning islands: 1"]:  # unseen combinations of seen pieces
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids[1:-1]
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")
    assert len(tokenizer("cat face").input_ids) == 4  # the learnt words are single tokens
    tokenizer.save_pretrained(tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path)("piñata").input_ids == tokenizer("piñata").input_ids


def test_t5_tokenizer_has_t5s_shape_round_trips_and_reloads(tmp_path):
    from transformers import T5Tokenizer

    tokenizer = build_t5_tokenizer(NAMES, alphabet="Ω")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    for text in NAMES + ["Ω face"]:
        ids = tokenizer(text).input_ids
        assert ids[-1] == 1 and 2 not in ids and tokenizer.decode(ids, skip_special_tokens=True) == text
    tokenizer.save_pretrained(tmp_path)
    again = T5Tokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tokenizer) and again("cat face").input_ids == tokenizer("cat face").input_ids
