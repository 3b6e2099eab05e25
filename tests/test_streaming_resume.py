"""Resuming a streamed source (issue 27, item 6). `data.stream_resume=exact` re-reads the pass so far and drops the
rows already consumed; `fast` restores the stream's `datasets` state (the shard and the example offset in it) through
the public `IterableDataset.state_dict()` / `load_state_dict()`. Both read a DataLoader worker's own share of the
stream without `datasets` splitting it over the workers again, and a checkpoint resumes in either mode (an older one
without the datasets state is refused by `fast` with a CheckpointMismatch that names the fix)."""

import collections
import io
import itertools
import json
import re

import datasets
import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from tips_hf.pretraining import data as data_module
from tips_hf.pretraining import load_config
from tips_hf.pretraining.checkpointing import CheckpointMismatch
from tips_hf.pretraining.data import Collator, StreamingPretrainingDataset, load_source

MICRO = [
    "model.vision={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, image_size: 56}",
    "model.text={hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
    "data.global_size=56", "data.local_size=28", "data.num_local_crops=1", "objective.head_prototypes=32",
    "objective.patch_prototypes=32", "objective.head_hidden_dim=32", "objective.head_bottleneck_dim=16",
]
ROWS = 6  # per file


def _corpus(folder, files: int):
    """`files` parquet shards of ROWS rows (20 × 20 PNGs, a distinct alt-text each) and the config streaming them."""
    features = datasets.Features({"img": datasets.Image(), "t": datasets.Value("string"),
                                  "s": datasets.Sequence(datasets.Value("string"))})
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rows = []
        for i in range(ROWS):
            buffer = io.BytesIO()
            Image.fromarray(np.full((20, 20, 3), (7 * (f * ROWS + i)) % 250, np.uint8)).save(buffer, format="PNG")
            rows.append({"img": {"bytes": buffer.getvalue(), "path": None}, "t": f"alt {f}-{i}", "s": [f"syn {f}-{i}"]})
        datasets.Dataset.from_list(rows, features=features).to_parquet(folder / f"shard-{f}.parquet")
    return [*MICRO, "data.source=parquet", f"data.path={folder / 'shard-*.parquet'}", "data.streaming=true",
            "data.image_column=img", "data.alt_text_column=t", "data.synthetic_columns=[s]"]


@pytest.fixture(autouse=True)
def no_shutdown_sleep(monkeypatch):
    """datasets >= 5 sleeps 5 s whenever a shuffled multi-file stream's readers stop (each pass, each resume), a
    workaround for apache/arrow#45214; these tests open dozens of streams."""
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0, raising=False)


@pytest.fixture(scope="module")
def four_files(tmp_path_factory):
    config = load_config(None, _corpus(tmp_path_factory.mktemp("four"), 4))
    return config, load_source(config.data)


def _stream(config, source, resume="exact", position=None, state=None, buffer=0, **options):
    return StreamingPretrainingDataset(source, config.data, config.objective, seed=1, shuffle_buffer=buffer,
                                       resume=resume, start_positions=None if position is None else [position],
                                       start_states=None if state is None else [state], **options)


def _assert_same(a, b):
    assert a["alt_text"] == b["alt_text"] and tuple(a["stream_position"]) == tuple(b["stream_position"])
    assert torch.equal(a["global_crop"], b["global_crop"]) and torch.equal(a["mask"], b["mask"])


@pytest.mark.parametrize("resume, buffer", [("exact", 0), ("exact", 3), ("fast", 0)])
def test_resume_continues_the_uninterrupted_stream(four_files, monkeypatch, resume, buffer):
    """Resumed from the position (and datasets state) after sample `cut`, in the first shard, at a shard boundary,
    later in the pass and in the second (reshuffled) pass, a stream yields the uninterrupted stream's next samples,
    views included: `exact` always, `fast` without a shuffle buffer. `exact` reads the pass again from its start,
    `fast` reads only the rows it yields (the datasets state reopens the shard at its offset)."""
    config, source = four_files
    full = list(itertools.islice(iter(_stream(config, source, buffer=buffer)), 40))  # 24 rows a pass
    assert [s["stream_position"][1] for s in full] == [0] * 24 + [1] * 16
    assert all(s["stream_state"]["epoch"] == s["stream_position"][1] for s in full)
    read = []

    def counted(stream):
        for row in rows(stream):
            read.append(row["t"])
            yield row

    rows = data_module._rows
    monkeypatch.setattr(data_module, "_rows", counted)
    for cut in (5, 6, 17, 30):
        read.clear()
        _, epoch, consumed, _ = full[cut - 1]["stream_position"]
        resumed = _stream(config, source, resume, full[cut - 1]["stream_position"][1:],
                          json.loads(json.dumps(full[cut - 1]["stream_state"])), buffer)  # as in a checkpoint
        for a, b in zip(itertools.islice(iter(resumed), 6), full[cut:cut + 6], strict=True):
            _assert_same(a, b)
        assert len(read) == (6 if resume == "fast" else consumed + 6), (cut, len(read))


def test_fast_resume_with_a_shuffle_buffer_loses_at_most_the_buffer(four_files):
    """With a shuffle buffer, `fast` restores the buffer's position, not its contents: the rest of the pass misses
    at most the buffered rows and (datasets >= 5, several shards read at once) repeats at most as many of the rows
    yielded before the checkpoint (datasets 4: none); it is not the uninterrupted order, and the next pass is whole."""
    config, source = four_files
    buffer, cut = 4, 10
    full = list(itertools.islice(iter(_stream(config, source, buffer=buffer)), 24))
    head = [s["alt_text"] for s in full[:cut]]
    resumed = _stream(config, source, "fast", full[cut - 1]["stream_position"][1:], full[cut - 1]["stream_state"],
                      buffer)
    samples = list(itertools.islice(iter(resumed), 40))
    tail = [s["alt_text"] for s in samples if s["stream_position"][1] == 0]
    everything = {s["alt_text"] for s in full}
    repeated, lost = set(head) & set(tail), everything - set(head) - set(tail)
    assert len(set(tail)) == len(tail) and set(tail) <= everything
    assert len(lost) <= buffer and len(repeated) <= buffer, (lost, repeated)
    if int(datasets.__version__.split(".")[0]) < 5:
        assert not repeated and len(lost) == buffer
    assert cut + len(tail) - len(repeated) + len(lost) == 24
    assert {s["alt_text"] for s in samples if s["stream_position"][1] == 1} == everything  # the next pass: whole


@pytest.mark.parametrize("files", [4, 1])
def test_dataloader_workers_read_their_own_slot_and_resume_fast(tmp_path, files):
    """num_workers=2: each worker reads exactly the share of its slot (the rows the same slot yields outside any
    worker), so `datasets` did not split the stream over the workers again (with 4 files, it would leave each worker
    half of its 2 files; with 1 file, worker 1 nothing); a loader resumed in `fast` mode from the positions and
    datasets states after micro-batch 5 yields the uninterrupted batches."""
    config = load_config(None, _corpus(tmp_path, files))
    source = load_source(config.data)
    per_worker = files * ROWS // 2
    collate = Collator(None, [], 16)

    def loader(resume="exact", positions=None, states=None, start_batch=0):
        stream = StreamingPretrainingDataset(source, config.data, config.objective, seed=1, num_workers=2,
                                             shuffle_buffer=0, resume=resume, start_positions=positions,
                                             start_states=states, start_batch=start_batch)
        return torch.utils.data.DataLoader(stream, batch_size=1, num_workers=2, collate_fn=collate)

    full = list(itertools.islice(iter(loader()), 2 * per_worker + 4))
    assert [int(b["stream_position"][0]) for b in full] == [0, 1] * (per_worker + 2)
    seen = collections.defaultdict(list)
    for batch in full[:2 * per_worker]:
        assert int(batch["stream_position"][1]) == 0
        seen[int(batch["stream_position"][0])].append(batch)
    for worker in (0, 1):  # the same slot iterated in this process (slot = rank × workers + worker)
        alone = _stream(config, source, rank=worker, world_size=2)
        for batch, sample in zip(seen[worker], itertools.islice(iter(alone), per_worker), strict=True):
            assert torch.equal(batch["global_crop"][0], sample["global_crop"])
    positions, states = {}, {}
    for batch in full[:5]:
        worker, *position = batch["stream_position"].tolist()
        positions[worker], states[worker] = position, batch["stream_state"]
    resumed = list(itertools.islice(iter(loader("fast", [positions[0], positions[1]], [states[0], states[1]],
                                                start_batch=5)), len(full) - 5))
    for a, b in zip(resumed, full[5:], strict=True):
        assert torch.equal(a["global_crop"], b["global_crop"]) and torch.equal(a["stream_position"],
                                                                                b["stream_position"])


def test_checkpoint_resumes_in_either_mode_and_an_older_one_is_refused_by_fast(four_files, tmp_path):
    """Through the trainer: a checkpoint holds each stream's position and datasets state (`stream_states`); written
    in `exact` mode it resumes in `fast` (and in `exact`) with the uninterrupted run's next batch; without the states
    (a checkpoint from before data.stream_resume) `fast` stops with a CheckpointMismatch naming
    data.stream_resume=exact, which resumes it."""
    from tips_hf.pretraining.schedules import step_values
    from tips_hf.pretraining.trainer import Pretrainer

    config, _ = four_files
    overrides = [*MICRO, *[f"data.{key}={value}" for key, value in (
        ("source", "parquet"), ("path", config.data.path), ("streaming", "true"), ("image_column", "img"),
        ("alt_text_column", "t"), ("synthetic_columns", "[s]"), ("shuffle_buffer", 0))],
        "training.batch_size=4", "training.report_to=none", "training.progress_bar=false", "training.save_steps=0",
        "eval.num_examples=0", "optim.warmup_steps=0", f"training.output_dir={tmp_path}"]

    def trainer(*more):
        return Pretrainer(load_config(None, [*overrides, *more]))

    with pytest.raises(ValueError, match="one of 'exact', 'fast'"):
        load_config(None, [*overrides, "data.stream_resume=slow"])
    first = trainer()
    for step in range(2):
        first.train_step(step_values(first.config, step))
    first.state.step = 2
    first.save()
    want = next(first.batches)
    state_file = tmp_path / "checkpoint-2" / "trainer_state.json"
    saved = json.loads(state_file.read_text())
    assert saved["stream_positions"] == [[[0, 8, 8]]]
    assert saved["stream_states"][0][0]["epoch"] == 0 and "examples_iterable" in saved["stream_states"][0][0]
    for mode in ("fast", "exact"):
        got = next(trainer(f"data.stream_resume={mode}", "training.resume_from_checkpoint=latest").batches)
        assert torch.equal(got["global_crop"], want["global_crop"]), mode
        assert torch.equal(got["stream_position"], want["stream_position"]), mode
    state_file.write_text(json.dumps({k: v for k, v in saved.items() if k != "stream_states"}))
    with pytest.raises(CheckpointMismatch, match="resume it with data.stream_resume=exact"):
        trainer("data.stream_resume=fast", "training.resume_from_checkpoint=latest")
    got = next(trainer("data.stream_resume=exact", "training.resume_from_checkpoint=latest").batches)
    assert torch.equal(got["global_crop"], want["global_crop"])


def test_streams_use_only_public_datasets_api():
    """data.py reaches datasets' iteration only through public methods (no `_prepare_ex_iterable_for_iteration`,
    `_ex_iterable`, `_starting_state_dict` or other underscore attribute of a dataset)."""
    text = (ROOT / "tips_hf" / "pretraining" / "data.py").read_text()
    for private in ("_prepare_ex_iterable", "_ex_iterable", "_starting_state_dict", "._state_dict"):
        assert private not in text, private
    assert not re.findall(r"(?:stream|source|dataset)\._[a-z]", text)
