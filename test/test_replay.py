import numpy as np
import pytest

from snn_control.predictive.replay import EpisodicReplay, ReplayError


def _episodes(n, steps=10, offset=0):
    # obs[e, t, 0] = episode id, obs[e, t, 1] = t: lets a test check which window came back
    obs = np.zeros((n, steps + 1, 2), dtype=np.float32)
    obs[:, :, 0] = np.arange(offset, offset + n)[:, None]
    obs[:, :, 1] = np.arange(steps + 1)[None, :]
    actions = obs[:, :-1, 1:2] + 0.5
    goals = np.arange(offset, offset + n, dtype=np.float32)[:, None]
    return obs, actions, goals


def test_windows_are_consecutive_steps_of_one_episode():
    replay = EpisodicReplay(8, 10, 2, 1, 1)
    replay.add(*_episodes(5))
    obs, actions, goals = replay.sample(np.random.default_rng(0), 64, 4)
    assert obs.shape == (5, 64, 2) and actions.shape == (4, 64, 1) and goals.shape == (64, 1)
    assert np.all(obs[:, :, 0] == obs[0, :, 0])  # same episode along the window
    assert np.all(np.diff(obs[:, :, 1], axis=0) == 1)  # consecutive steps
    assert np.all(actions[:, :, 0] == obs[:-1, :, 1] + 0.5)  # action t belongs to obs t
    assert np.all(goals[:, 0] == obs[0, :, 0])
    assert obs[-1, :, 1].max() <= 10


def test_ring_buffer_overwrites_oldest():
    replay = EpisodicReplay(4, 10, 2, 1, 1)
    replay.add(*_episodes(3))
    replay.add(*_episodes(3, offset=3))
    assert replay.size == 4
    assert sorted(replay.obs[:, 0, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_sampling_covers_all_start_positions():
    replay = EpisodicReplay(2, 10, 2, 1, 1)
    replay.add(*_episodes(2))
    obs, _, _ = replay.sample(np.random.default_rng(1), 2000, 3)
    assert set(obs[0, :, 1].astype(int)) == set(range(8))


def test_errors():
    replay = EpisodicReplay(4, 10, 2, 1, 1)
    with pytest.raises(ReplayError, match="empty replay"):
        replay.sample(np.random.default_rng(0), 4, 3)
    obs, actions, goals = _episodes(2)
    with pytest.raises(ReplayError, match="do not fit"):
        replay.add(obs[:, :5], actions, goals)
    obs[0, 3, 1] = np.nan
    with pytest.raises(ReplayError, match="NaN"):
        replay.add(obs, actions, goals)
    replay.add(*_episodes(2))
    with pytest.raises(ReplayError, match="window length 11"):
        replay.sample(np.random.default_rng(0), 4, 11)


def test_save_load_round_trip(tmp_path):
    replay = EpisodicReplay(4, 10, 2, 1, 1)
    replay.add(*_episodes(3))
    replay.save(tmp_path / "r.npz")
    other = EpisodicReplay(4, 10, 2, 1, 1)
    other.load(tmp_path / "r.npz")
    assert other.size == 3 and other.cursor == replay.cursor
    assert np.array_equal(other.obs[:3], replay.obs[:3])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ReplayError, match="bad.npz: unreadable"):
        other.load(tmp_path / "bad.npz")
