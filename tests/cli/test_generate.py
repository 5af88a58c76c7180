"""``medfm vqa``, ``medfm report-eval``, ``medfm synth`` in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medfm.cli.main import main
from medfm.results import read_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks" / "vqa"))
from test_vqa_task import make_vqa_folder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
from test_text import make_tiny_bert  # noqa: E402


def test_vqa_command(tmp_path, capsys) -> None:
    data = make_vqa_folder(tmp_path / "toyvqa", n_images=16)
    rc = main(["vqa", "--train", str(data), "--out", str(tmp_path / "out"), "--fusion", "linear", "--n-boot", "20", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    protocols = [r["protocol"] for r in doc["records"]]
    assert protocols == ["vqa/majority", "vqa/question_only", "vqa/discriminative"]
    spec, recs = read_results(tmp_path / "out" / "results.json")
    assert spec["fusion"] == "linear" and recs[0].split.startswith("image-disjoint")
    assert "closed_accuracy" in recs[2].metrics
    # refuses a non-empty output folder
    rc = main(["vqa", "--train", str(data), "--out", str(tmp_path / "out")])
    assert rc == 2 and "not empty" in capsys.readouterr().err


def test_vqa_missing_folder(tmp_path, capsys) -> None:
    rc = main(["vqa", "--train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_vqa_command_ssl_encoder(tmp_path, capsys) -> None:
    """--image-encoder ssl pretrains inside the run on the training images and records it."""
    data = make_vqa_folder(tmp_path / "toyvqa", n_images=10)
    rc = main(["vqa", "--train", str(data), "--out", str(tmp_path / "out"), "--image-encoder", "ssl", "--ssl-minutes", "0.002",
               "--val-splits", "1", "--n-boot", "10", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    _, recs = read_results(tmp_path / "out" / "results.json")
    disc = recs[2]
    assert disc.protocol == "vqa/discriminative" and disc.model.endswith("+ssl")
    info = disc.extra["ssl_pretraining"]
    test_qids = {p["qid"] for p in disc.extra["predictions"]}
    items = json.loads((data / "qa.json").read_text())
    test_images = {r["image_name"] for r in items if str(r["qid"]) in test_qids}
    assert info["n_images"] == 10 - len(test_images) and not set(info["images"]) & test_images


def test_report_eval_command(tmp_path, capsys) -> None:
    (tmp_path / "pred.csv").write_text("id,report\na,No pleural effusion.\nb,Cardiomegaly.\n")
    (tmp_path / "ref.csv").write_text("id,report\na,No pleural effusion or pneumothorax.\nb,Cardiomegaly is present.\n")
    rc = main(["report-eval", "--pred", str(tmp_path / "pred.csv"), "--ref", str(tmp_path / "ref.csv"),
               "--meteor", "nltk", "--n-boot", "20", "--out", str(tmp_path / "o"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    m = json.loads(captured.out)["records"][0]["metrics"]
    assert {"bleu1", "bleu4", "rouge_l", "cider", "meteor_nltk", "ce_f1"} <= set(m)
    assert m["ce_f1"]["value"] == pytest.approx(1.0)
    _, recs = read_results(tmp_path / "o" / "results.json")
    assert recs[0].protocol == "report_gen/eval"


def test_report_eval_bertscore_option(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "pred.csv").write_text("id,report\na,No pleural effusion.\nb,Cardiomegaly.\n")
    (tmp_path / "ref.csv").write_text("id,report\na,No pleural effusion or pneumothorax.\nb,Cardiomegaly is present.\n")
    args = ["report-eval", "--pred", str(tmp_path / "pred.csv"), "--ref", str(tmp_path / "ref.csv"), "--meteor", "off", "--n-boot", "20"]
    bert = make_tiny_bert(tmp_path / "bert", words=["cardiomegaly", "present"])
    rc = main([*args, "--bertscore-model", bert, "--out", str(tmp_path / "o"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    m = json.loads(captured.out)["records"][0]["metrics"]
    assert 0 < m["bertscore_f1"]["value"] < 1 and m["bertscore_f1"]["ci_low"] <= m["bertscore_f1"]["value"]
    spec, _ = read_results(tmp_path / "o" / "results.json")
    assert spec["bertscore_model"] == bert
    # an absent model: the metric is skipped with its reason, the rest still reported
    rc = main([*args, "--bertscore-model", str(tmp_path / "absent"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rec = json.loads(captured.out)["records"][0]
    assert "bertscore_f1" not in rec["metrics"] and "rouge_l" in rec["metrics"]
    assert "not found" in rec["skipped_metrics"]["bertscore"] and "skipped" in captured.err


@pytest.mark.slow
def test_synth_command(tmp_path, capsys, shared_data) -> None:
    rc = main(["synth", "--dataset", "breastmnist", "--data-dir", str(shared_data), "--train-steps", "2",
               "--batch-size", "8", "--channels", "8,16", "--sample-steps", "2", "--n-per-class", "4",
               "--max-train", "32", "--feature-encoder", "test/vit-tiny-timm", "--n-boot", "10",
               "--device", "cpu", "--out", str(tmp_path / "s"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (tmp_path / "s" / "samples.png").is_file() and (tmp_path / "s" / "samples.npz").is_file()
    _, recs = read_results(tmp_path / "s" / "results.json")
    assert recs[0].extra["feature_encoder"] == "test/vit-tiny-timm"


def test_vqa_generative_over_http(tmp_path, capsys) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Yes(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps({"choices": [{"message": {"content": "Yes, it is."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Yes)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        data = make_vqa_folder(tmp_path / "toyvqa", n_images=8)
        rc = main(["vqa", "--train", str(data), "--image-encoder", "none", "--model", "med-vlm",
                   "--base-url", f"http://127.0.0.1:{srv.server_address[1]}", "--generate-limit", "6",
                   "--n-boot", "10", "--out", str(tmp_path / "o"), "--json"])
    finally:
        srv.shutdown()
        srv.server_close()
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rec = json.loads(captured.out)["records"][-1]
    assert rec["protocol"] == "vqa/generative" and rec["n"] == 6 and rec["model"] == "http/med-vlm"
    _, recs = read_results(tmp_path / "o" / "results.json")
    # closed questions keep the leading yes/no; the open one keeps the first line
    assert [p["pred"] for p in recs[-1].extra["predictions"]] == ["yes", "yes", "yes", "Yes, it is", "yes", "yes"]
