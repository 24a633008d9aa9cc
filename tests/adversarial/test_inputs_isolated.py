"""Every input isolated (issue 27, item 1): a file that cannot be named, read, decoded or
written is a document or a quarantine row with a one-line reason, and the rest of the run
completes. A name that is not UTF-8 is stored losslessly: its id escapes each bad byte as
`%XX` (reversible), its uri shows it as `\\xff`."""

from __future__ import annotations

import json
import os

import pytest

from app.cli import main
from corpusmill.ids import display_name, doc_id_for, escape_part, parse_doc_id
from corpusmill.store import Store
from tests.adversarial.test_cli_errors import cli_environment

BAD_NAME = os.fsdecode(b"bad\xff.txt")  # what os.listdir gives for those bytes


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_embedder_path):
    return cli_environment(monkeypatch, tmp_path, tiny_embedder_path)


def test_ids_escape_undecodable_bytes_losslessly_and_old_ids_read_back():
    for key in (BAD_NAME, "a%b#c.txt", "plain.txt", "x\udcff%FF\ud800.txt", "caf\u00e9 %41.txt"):
        doc_id = doc_id_for("src", key)
        doc_id.encode("utf-8")  # no lone surrogate left: Arrow can write it
        assert parse_doc_id(doc_id) == ("src", key, None)
    assert doc_id_for("src", BAD_NAME) == "src#bad%FF.txt"
    # Ids written before: only `%25` and `%23` ever appeared; they read back the same.
    assert parse_doc_id("a%25b#c%23d%25%23") == ("a%b", "c#d%#", None)
    assert escape_part("50%#") == "50%25%23"
    assert display_name(BAD_NAME) == "bad\\xff.txt"


def test_a_file_name_that_is_not_utf8_is_ingested_beside_the_others(env, capsys):
    monkeypatch, corpus = env
    (corpus / "good.txt").write_text("a good file about gardens")
    bad = os.path.join(os.fsencode(corpus), b"bad\xff.txt")
    with open(bad, "wb") as f:
        f.write(b"a file whose name is latin-1 bytes, about boats")
    # A record whose id and text hold lone surrogates (JSON allows `\udcff`).
    (corpus / "r.jsonl").write_text(json.dumps({"_id": "r\udcff", "text": "x \ud800 boats"}) + "\n")

    code = main(["ingest", str(corpus), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["success"] and summary["documents"] == 4 and summary["quarantined"] == 0

    rows = Store(os.environ["CORPUSMILL_DB"]).scan("documents", ["doc_id", "uri", "text"])
    by_id = {r["doc_id"]: r for r in rows.to_pylist()}
    label = str(corpus.resolve())
    stored = by_id[doc_id_for(label, BAD_NAME)]
    assert parse_doc_id(stored["doc_id"])[1] == BAD_NAME  # the exact bytes come back
    assert stored["uri"].endswith("bad\\xff.txt")
    record = by_id[f"{escape_part(label)}#r.jsonl#r%FF"]
    assert parse_doc_id(record["doc_id"])[2] == "r\udcff" and "\ufffd" in record["text"]

    code = main(["search", "latin-1 bytes boats", "--k", "10", "--json"])
    hits = json.loads(capsys.readouterr().out)
    assert code == 0 and stored["doc_id"] in {h["doc_id"] for h in hits}


def test_a_reader_that_fails_on_one_file_quarantines_that_file(env, capsys, monkeypatch):
    """Fault injection (labelled): the HTML reader raises on one file, as a bug in a
    reader would. That file is quarantined with the error; the run completes."""
    from corpusmill.sources import files

    _monkeypatch, corpus = env
    real = files.extract_html

    def flaky(text: str):
        if "explode" in text:
            raise RecursionError("maximum recursion depth exceeded")
        return real(text)

    monkeypatch.setattr(files, "extract_html", flaky)
    (corpus / "ok.html").write_text("<p>fine markup about kites</p>")
    (corpus / "boom.html").write_text("<p>explode</p>")
    code = main(["ingest", str(corpus), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["documents"] == 2 and summary["quarantined"] == 1
    assert "boom.html" in summary["quarantine_sample"]
    assert "could not be read (RecursionError: maximum recursion" in summary["quarantine_sample"]


def test_an_object_whose_body_cannot_be_read_is_quarantined(local_s3, tmp_path, monkeypatch):
    """Fault injection (labelled): moto serves the bytes, and the connection is cut while
    one object's body streams in. That object is quarantined, the other read."""
    from corpusmill.sources import Quarantined, ReadOptions, objects, read_source  # noqa: I001

    client = local_s3.client()
    prefix = f"cut-{tmp_path.name}"
    client.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/a.txt", Body=b"object a")
    client.put_object(Bucket=local_s3.bucket, Key=f"{prefix}/cut.txt", Body=b"object cut")
    real_client = objects.s3_client

    def client_with_a_cut(options):
        s3 = real_client(options)
        real_get = s3.get_object

        def get_object(**kw):
            response = real_get(**kw)
            if kw["Key"].endswith("cut.txt"):

                def broken(*_args, **_kw):
                    raise ConnectionResetError(104, "Connection reset by peer")

                response["Body"].read = broken
            return response

        s3.get_object = get_object
        return s3

    monkeypatch.setattr(objects, "s3_client", client_with_a_cut)
    options = ReadOptions(storage_options=local_s3.storage_options)
    items = list(read_source(local_s3.uri(prefix), options=options))
    bad = [i for i in items if isinstance(i, Quarantined)]
    assert len(items) == 2 and len(bad) == 1 and bad[0].uri.endswith("cut.txt")
    assert bad[0].reason.startswith("could not be read (ConnectionResetError")
