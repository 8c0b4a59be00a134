"""The tiler: windows cover the picture, neighbouring ramps add up to one, and any network that looks only
nearby gives the same output tiled as whole."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdlocal.engine.upscalers.tiling import ramp, run_tiled, starts, tile_count  # noqa: E402


def test_windows_step_by_tile_minus_overlap_and_the_last_ends_at_the_edge() -> None:
    assert starts(100, 128, 32) == [0]
    assert starts(160, 64, 16) == [0, 48, 96]
    assert starts(170, 64, 16) == [0, 48, 96, 106]
    assert tile_count(160, 100, 64, 16) == 3 * 2


def test_the_ramps_of_two_neighbours_add_up_to_one_over_their_overlap() -> None:
    overlap = 16
    first = ramp(64, overlap, lead=False, trail=True)
    second = ramp(64, overlap, lead=True, trail=False)
    together = torch.zeros(64 + 48)
    together[:64] += first
    together[48:] += second
    assert torch.allclose(together, torch.ones_like(together))
    assert first[0] == 1 and first[-1] == 0 and second[0] == 0  # the outer quarter of the overlap is dropped


def test_a_local_network_gives_the_same_output_tiled_and_whole() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3 * 4, 3, padding=1)

    def network(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_shuffle(conv(x), 2)

    picture = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        whole = network(picture)
    seen: list[tuple[int, int]] = []
    tiled = run_tiled(network, picture, 2, tile=32, overlap=16, before_tile=lambda d, t: seen.append((d, t)))
    assert tiled.shape == whole.shape == (1, 3, 140, 180)
    assert torch.allclose(tiled, whole, atol=1e-5)
    assert seen[-1] == (tile_count(70, 90, 32, 16),) * 2 and seen[0][0] == 0


def test_an_overlap_over_half_the_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap 40 must be at most half the tile size 64"):
        run_tiled(lambda x: x, torch.zeros(1, 3, 100, 100), 1, tile=64, overlap=40)
