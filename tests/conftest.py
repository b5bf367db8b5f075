import os

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

# The test models are tiny: a second intra-op thread only adds synchronisation, and on a 2-core machine
# that is busy with other work two threads made the suite up to 10x slower. Subprocesses (the CLI tests)
# inherit the variable.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def tiny_pixel_unet(num_class_embeds=None):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    ).eval()


@pytest.fixture(scope="session")
def tiny_pixel_model_dir(tmp_path_factory):
    """A tiny random UNet2DModel (8², downsampling factor 2) with a v-prediction cosine schedule, saved to disk."""
    path = tmp_path_factory.mktemp("tiny_pixel")
    tiny_pixel_unet().save_pretrained(path)
    DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def emoji_samples():
    """(images (4, 3, 32, 32) in [-1, 1], class labels (4,)): the embedded model's own trained-size samples.

    Stand-ins for real emoji where a test needs realistic images but not the data set, which needs Debian
    packages that only ``.ci/run`` installs: the upscaling tests run on a fresh machine too.
    """
    from hiresdiff.loading.pixel_model import load_pixel_model, sample
    from hiresdiff.models import EMBEDDED_MODEL_DIR

    unet, scheduler = load_pixel_model(EMBEDDED_MODEL_DIR, "sde-dpm++")
    labels = torch.tensor([0, 1, 2, 3])
    images = sample(
        unet, scheduler, height=32, width=32, num_images=4, seed=0, steps=20, class_labels=labels, progress=False
    )
    return images, labels
