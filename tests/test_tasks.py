"""Task plans: what each prompting mode pins, where it starts, and which decoded frames are new;
the context spans agree with the causal VAE."""

import pytest
import torch

from kinema import tasks
from kinema.errors import KinemaError
from kinema.vae import CausalVAE, VAEConfig

C, H, W = 16, 4, 6



def latent(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(C, frames, H, W, generator=torch.Generator().manual_seed(seed))


def test_any_positive_size_is_accepted_and_covered_by_the_grid():
    assert tasks.check_size(160, 96) == (160, 96)
    assert tasks.check_size(97, 61) == (97, 61)  # any size: the pipeline crops it from the grid
    with pytest.raises(KinemaError, match="positive"):
        tasks.check_size(0, 8)
    assert tasks.check_size(tasks.MAX_SIDE, 1) == (tasks.MAX_SIDE, 1)
    with pytest.raises(KinemaError, match="at most 8192"):  # 10000x10000 would take all the memory there is
        tasks.check_size(10000, 10000)
    assert tasks.covering_size(160, 96) == (160, 96)
    assert tasks.covering_size(1920, 1080) == (1920, 1088)
    assert tasks.covering_size(97, 61, 32) == (128, 64)


def test_durations_become_one_plus_4k_frames():
    assert tasks.latent_frames_for(2.0, 12.0) == 7  # 24 frames asked -> 25 = 1 + 4 * 6
    assert tasks.pixel_frames(7) == 25
    assert tasks.latent_frames_for(0.1, 8.0) == 2  # a video has at least 1 + 4 frames
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(KinemaError, match="seconds"):
            tasks.latent_frames_for(bad, 12.0)
    with pytest.raises(KinemaError, match="fps"):
        tasks.latent_frames_for(1.0, 0.0)


def test_text_to_video_and_image_pin_nothing_and_start_from_noise():
    plan = tasks.text_to_video(C, 5, H, W)
    assert plan.shape == (C, 5, H, W) and not plan.pinned.any() and plan.start is None and plan.t_start == 1.0
    image = tasks.text_to_image(C, H, W)
    assert image.frames == 1 and not image.pinned.any()


def test_image_to_video_pins_frame_zero_to_the_image():
    img = latent(1)
    plan = tasks.image_to_video(img, 4)
    assert plan.pinned.tolist() == [True, False, False, False]
    assert torch.equal(plan.values[:, :1], img)
    with pytest.raises(KinemaError):
        tasks.image_to_video(latent(2), 4)


def test_extend_pins_the_context_at_the_start_or_the_end():
    ctx = latent(2)
    fwd = tasks.extend_forward(ctx, 3)
    assert fwd.pinned.tolist() == [True, True, False, False, False]
    assert torch.equal(fwd.values[:, :2], ctx)
    back = tasks.extend_backward(ctx, 3)
    assert back.pinned.tolist() == [False, False, False, True, True]
    assert torch.equal(back.values[:, 3:], ctx)


def test_connect_pins_a_tail_at_the_start_and_b_head_at_the_end():
    a, b = latent(2, 1), latent(1, 2)
    plan = tasks.connect(a, b, 2)
    assert plan.pinned.tolist() == [True, True, False, False, True]
    assert torch.equal(plan.values[:, :2], a) and torch.equal(plan.values[:, 4:], b)
    with pytest.raises(KinemaError, match="sizes"):
        tasks.connect(a, torch.zeros(C, 1, H + 2, W), 2)
    with pytest.raises(KinemaError, match="at least 1"):
        tasks.connect(a, b, 0)


def test_sdedit_starts_from_the_input_at_t_strength():
    z = latent(3)
    plan = tasks.sdedit(z, 0.4)
    assert torch.equal(plan.start, z) and plan.t_start == 0.4 and not plan.pinned.any()
    assert tasks.sdedit(z, 1.0).start is None  # pure noise: the input is ignored
    with pytest.raises(KinemaError, match="strength"):
        tasks.sdedit(z, 1.5)


def test_new_frames_of_each_window():
    # forward: 2 context latents decode to 1 + 4 frames, then 4 per new latent
    fwd = tasks.extend_forward(latent(2), 3)
    assert tasks.new_frames("extend_forward", fwd, context=2) == slice(5, 17)
    # backward by 3 + 1 latents: 4 * 3 new frames; the slot of the clip's first frame is dropped
    back = tasks.extend_backward(latent(2), 4)
    assert tasks.new_frames("extend_backward", back, end_context=2) == slice(0, 12)
    # connect with m = 2 middle latents: 4m - 1 frames between A's decoded tail and B's first-frame slot
    con = tasks.connect(latent(2), latent(2), 2)
    assert tasks.new_frames("connect", con, 2, 2) == slice(5, 12)
    assert tasks.new_frames("text_to_video", tasks.text_to_video(C, 3, H, W)) == slice(0, 9)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_context_spans_match_the_causal_vae(k):
    vae = CausalVAE(VAEConfig.tiny()).eval()
    with torch.inference_mode():
        tail = vae.encode(torch.zeros(1, 3, tasks.tail_span(k), 16, 16)).mode()[0]
        head = tasks.head_context(vae.encode(torch.zeros(1, 3, tasks.head_span(k), 16, 16)).mode()[0])
    assert tail.shape[1] == k and head.shape[1] == k
