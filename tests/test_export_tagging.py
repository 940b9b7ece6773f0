"""Tagging tasks exported and served: the whole-model folder's (batch, tokens, tags) logits, the
standard token-classification folder through ``transformers.pipeline`` (entities equal to
``Run.predict``'s on CoNLL-2003 dev sentences), the ONNX graph's per-token output and its int8
check, the model card, and ``mtdnn serve`` (entities as ``Run.predict``, long texts through windows,
a sentence task and a tagging task of one text from one encoder pass). On a tiny encoder trained on
CoNLL-2003 NER beside SST-2; the server's plumbing also on a hand-made engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_fixtures import exported, train_run
from mtdnn.api import load_run
from mtdnn.data.readers import read_split
from mtdnn.export.engine import TaskInfo, TorchEngine, load_engine, present
from mtdnn.kinds import get_kind
from mtdnn.serve import ServeOptions, create_app
from mtdnn.tasks.registry import builtin_tasks

pytestmark = pytest.mark.slow

NER = "conll03_ner"
IOB2 = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
MAX_LEN = 48
RAW_TEXTS = ["EU rejects German call to boycott British lamb.", "Peter Blackburn went to Brussels on Monday!",
             "Dr. O'Neill (co-founder of U.S.-based Acme) paid $3,000.50 in Tokyo.", "EU", ""]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_encoder, data_dir) -> Path:
    out = tmp_path_factory.getbasetemp() / "tagging-deploy" / "run"
    if (out / "metrics.json").is_file():
        return out
    return train_run(out, tiny_encoder, data_dir, f"{NER},sst2", max_train_examples=400, max_eval_examples=48,
                     max_seq_len=MAX_LEN, epochs=3, lr=3e-3, seed=3)


@pytest.fixture(scope="module")
def dev_texts(data_dir) -> list[str]:
    """CoNLL-2003 dev sentences that fit one window, joined by spaces, and a few raw texts."""
    raw = read_split(builtin_tasks()[NER], "dev", data_dir, allow_hub=False)
    return [" ".join(w) for w in raw.words[:80] if len(w) <= 25][:40] + RAW_TEXTS


def _entities(answers) -> list[list[tuple]]:
    return [[(e["type"], e["start"], e["end"], e["text"]) for e in a] for a in answers]


def test_whole_model_folder_gives_token_logits(tmp_path_factory, run_dir, data_dir):
    from mtdnn.export import modeling_mtdnn as modeling
    from mtdnn.export.folder import register_config
    from mtdnn.export.verify import tokenized_batch

    folder = exported(tmp_path_factory, run_dir, "tagging-hf", "--format", "hf")
    register_config()
    model = modeling.MtdnnMultiTaskModel.from_pretrained(str(folder)).eval()
    spec = model.config.tasks[NER]
    assert spec["output"] == {"outputs": 9, "per": "token"} and spec["settings"] == {"scheme": "iob1", "overlap": 11}
    assert model.config.tasks["sst2"]["output"] == {"outputs": 2, "per": "row"}
    run = load_run(run_dir, device="cpu")
    raw = read_split(run.task(NER), "dev", data_dir, allow_hub=False).select(list(range(12)))
    split, batch = tokenized_batch(run.task(NER), raw, run.tokenizer, MAX_LEN)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       token_type_ids=batch["token_type_ids"], task=NER).logits
    assert logits.shape == (*batch["input_ids"].shape, 9)
    want = run.predictions(NER, raw).outputs  # softmax at each window's tokens
    lengths = batch["attention_mask"].sum(1)
    for r in range(len(split)):
        np.testing.assert_allclose(torch.softmax(logits[r, :lengths[r]], -1).numpy(), want[r], atol=1e-5, rtol=0)
    # mtdnn predict on the export gives the run's entities
    assert _entities(load_run(folder, device="cpu").predict(NER, RAW_TEXTS)) == _entities(run.predict(NER, RAW_TEXTS))


def test_standard_folder_through_the_pipeline_equals_predict(tmp_path_factory, run_dir, dev_texts):
    from transformers import pipeline

    folder = exported(tmp_path_factory, run_dir, "tagging-ner", "--format", "hf", "--task", NER)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"]
    assert [cfg["id2label"][str(i)] for i in range(9)] == IOB2
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card
    assert 'pipeline("token-classification", model="tagging-ner", aggregation_strategy="first")' in card
    assert "| entities LOC, MISC, ORG, PER (a tag per word, iob2: O, B-PER," in card
    want = load_run(run_dir, device="cpu").predict(NER, dev_texts)
    clf = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    got = [clf(text) if text else [] for text in dev_texts]
    got_entities = [[(e["entity_group"], e["start"], e["end"], text[e["start"]:e["end"]]) for e in g]
                    for text, g in zip(dev_texts, got)]
    assert got_entities == _entities(want)
    assert sum(map(len, want)) >= 30  # the comparison covers many entities
    np.testing.assert_allclose([float(e["score"]) for g in got for e in g], [e["score"] for w in want for e in w],
                               atol=1e-4, rtol=0)


def test_onnx_graph_has_per_token_outputs(tmp_path_factory, run_dir):
    import onnxruntime as ort

    from mtdnn.export import modeling_mtdnn as modeling
    from mtdnn.export.folder import register_config

    onnx_dir = exported(tmp_path_factory, run_dir, "tagging-onnx", "--format", "onnx", "--quantize", "int8")
    hf_dir = exported(tmp_path_factory, run_dir, "tagging-hf", "--format", "hf")
    register_config()
    model = modeling.MtdnnMultiTaskModel.from_pretrained(str(hf_dir)).eval()
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    tok = model_tokenizer(hf_dir)
    for texts in (["EU rejects German call to boycott British lamb ."], RAW_TEXTS[:4] + ["A b c d e f g h i j k l"]):
        enc = tok(texts, truncation=True, padding=True, return_tensors="np")
        (got,) = session.run([NER], {i.name: enc[i.name] for i in session.get_inputs()})
        assert got.shape == (len(texts), enc["input_ids"].shape[1], 9)
        with torch.no_grad():
            want = model(**{k: torch.from_numpy(v) for k, v in enc.items()}, task=NER).logits.numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    change = json.loads((onnx_dir / "int8_check.json").read_text())
    assert set(change[NER]) == {"f1", "precision", "recall"} and "accuracy" in change["sst2"]
    assert json.loads((onnx_dir / "tasks.json").read_text())["tasks"][NER]["output"]["per"] == "token"


def model_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)


def test_serve_answers_entities_from_shared_passes(run_dir, dev_texts):
    from fastapi.testclient import TestClient  # the [serve] extra

    engine = load_engine(run_dir)
    calls: list[int] = []
    for encoder in engine.model.encoders.values():
        encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]),
                                      with_kwargs=True)
    run = load_run(run_dir, device="cpu")
    long_text = " ".join(["Peter Blackburn met EU officials from Germany in Brussels ."] * 10)
    assert len(run.tokenizer(long_text)["input_ids"]) > 2 * MAX_LEN  # several windows
    texts = dev_texts[:12] + [long_text, ""]
    with TestClient(create_app(engine, ServeOptions(max_batch_size=64))) as client:
        r = client.post("/predict", json={"task": NER, "inputs": [{"text_a": t} for t in texts]})
        assert r.status_code == 200, r.text
        got = r.json()["results"][NER]
        want = run.predict(NER, texts)
        assert _entities(got) == _entities(want) and got[-1] == [] and len(want[-2]) >= 3
        np.testing.assert_allclose([e["score"] for g in got for e in g], [e["score"] for w in want for e in w],
                                   atol=1e-5, rtol=0)
        one = [{"text_a": dev_texts[0]}]
        alone = client.post("/predict", json={"task": "sst2", "inputs": one}).json()["results"]["sst2"]
        calls.clear()
        both = client.post("/predict", json={"tasks": ["sst2", NER], "inputs": one}).json()["results"]
        assert calls == [1]  # one encoder pass of one row for both tasks
        assert both["sst2"][0]["label"] == alone[0]["label"]
        np.testing.assert_allclose(list(both["sst2"][0]["probabilities"].values()),
                                   list(alone[0]["probabilities"].values()), atol=1e-6, rtol=0)
        assert _entities(both[NER]) == _entities(run.predict(NER, [dev_texts[0]]))
        tasks = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
        assert tasks[NER]["output"] == "token" and tasks["sst2"]["output"] == "row"
        assert tasks[NER]["settings"]["scheme"] == "iob1" and tasks["sst2"]["settings"] == {}


class _HandEngine(TorchEngine):
    """A fake model over the real tokenizer: task ``s`` (classification) outputs the row's length;
    task ``t`` (tagging, iob2, one type X) puts B-X on the token ``paris``, I-X on ``city``, O
    elsewhere, with logit 4 over 0. Counts its passes."""

    backend = "hand"

    def __init__(self, tokenizer, max_len: int) -> None:  # no model: ``_forward`` is the fake one
        self.tokenizer, self.max_len = tokenizer, max_len
        self.tasks = {"s": TaskInfo("s", "classification", "single", ["a", "b"], "linear", 1, "e"),
                      "t": TaskInfo("t", "tagging", "words", ["O", "B-X", "I-X"], "linear", 1, "e",
                                    settings={"scheme": "iob2", "overlap": 1}, output="token")}
        self.passes: list[tuple[int, int, list[str]]] = []
        self.paris, self.city = tokenizer.convert_tokens_to_ids(["paris", "city"])

    def _forward(self, inputs, tasks):
        ids = inputs["input_ids"]
        self.passes.append((ids.shape[0], ids.shape[1], list(tasks)))
        tags = np.zeros((*ids.shape, 3), dtype=np.float32)
        tags[..., 0] = 4.0
        for k, token in ((1, self.paris), (2, self.city)):
            tags[ids == token] = 0.0
            tags[..., k][ids == token] = 4.0
        lengths = inputs["attention_mask"].sum(1).astype(np.float32)
        return {"s": np.stack([lengths, -lengths], 1), "t": tags}


def test_served_tagging_by_hand(monkeypatch):
    from transformers import AutoTokenizer

    from mtdnn.model.multitask import default_encoder_path

    engine = _HandEngine(AutoTokenizer.from_pretrained(default_encoder_path()), max_len=8)
    p = float(np.exp(4) / (np.exp(4) + 2))  # the probability of the 4-logit tag
    short = "I love Paris City."  # [CLS] i love paris city . [SEP]: 7 tokens, one window
    out = engine.run([short], None, ["s", "t"])
    assert engine.passes == [(1, 7, ["s", "t"])]  # one row, one pass, both tasks
    assert out["s"].tolist() == [[7.0, -7.0]]
    (answer,) = [present(engine.tasks["t"], row) for row in out["t"]]
    assert answer == [{"type": "X", "start": 7, "end": 17, "text": "Paris City", "score": pytest.approx(p)}]
    engine.passes.clear()
    kind = get_kind("tagging")
    lengths: list[list[int]] = []
    answers_of = kind.serve_answers
    monkeypatch.setattr(kind, "serve_answers", lambda info, encoded, outputs: lengths.append(
        [len(o) for o in outputs]) or answers_of(info, encoded, outputs))
    long_text = "Paris a b c d e f Paris"  # 8 words: windows of words 0-5 and 5-7 (6 tokens + 2)
    out = engine.run([long_text, ""], None, ["t"])
    assert lengths == [[8, 5]]  # each window's tokens, padding cut off
    answers = [present(engine.tasks["t"], row) for row in out["t"]]
    assert [(e["start"], e["end"]) for e in answers[0]] == [(0, 5), (18, 23)] and answers[1] == []
    assert sum(n for n, _, _ in engine.passes) == 2  # two windows, the empty text none
    plain = TaskInfo("pos", "tagging", "words", ["O", "B-X", "I-X"], "linear", 1, "e",
                     settings={"scheme": "plain", "overlap": 1}, output="token")
    encoded = kind.serve_inputs(plain, engine.tokenizer, 8, ["Paris now"], None)
    assert encoded.rows["input_ids"] == [engine.tokenizer("Paris now")["input_ids"]]
    logits = engine._forward({k: np.asarray(v) for k, v in encoded.rows.items()}, ["t"])["t"]
    assert kind.serve_answers(plain, encoded, list(logits)) == [[
        {"word": "Paris", "start": 0, "end": 5, "tag": "B-X", "score": pytest.approx(p)},
        {"word": "now", "start": 6, "end": 9, "tag": "O", "score": pytest.approx(p)}]]


def test_tagging_kind_exports_but_refuses_smart_and_distillation():
    kind = get_kind("tagging")
    assert kind.refuses("export") is None
    assert "SMART" in kind.refuses("smart") and "distillation" in kind.refuses("distillation")
    ner = builtin_tasks()[NER]
    assert kind.standard_folder(ner) == (dict(enumerate(IOB2)), "single_label_classification")
    assert kind.export_head(ner) == {"outputs": 9, "per": "token"}
    assert get_kind("classification").export_head(builtin_tasks()["sst2"]) == {"outputs": 2, "per": "row"}
    assert kind.card_labels(builtin_tasks()["conll03_pos"]).startswith("a tag per word: ")
