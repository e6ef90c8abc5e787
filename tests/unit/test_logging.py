"""JSON log lines carry the request, tenant, job and run of the work in hand."""

from __future__ import annotations

import json
import logging

from schedsvc.observability.logging import JsonFormatter, job_id_var, request_id_var, run_id_var, tenant_var


def test_json_line_with_context() -> None:
    tokens = [request_id_var.set("req-1"), tenant_var.set("acme"), job_id_var.set("j1"), run_id_var.set("j1:5")]
    try:
        record = logging.LogRecord("schedsvc.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        for var, token in zip((request_id_var, tenant_var, job_id_var, run_id_var), tokens, strict=True):
            var.reset(token)
    assert line["msg"] == "hello world"
    assert line["level"] == "warning"
    assert line["logger"] == "schedsvc.test"
    assert (line["requestId"], line["tenant"], line["jobId"], line["runId"]) == ("req-1", "acme", "j1", "j1:5")
    assert line["ts"].endswith("+00:00")


def test_context_absent_outside_work() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain", (), None)
    line = json.loads(JsonFormatter().format(record))
    assert "requestId" not in line and "tenant" not in line


def test_exceptions_are_one_line_of_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]
