"""What neocloud's tracking proxy passes on, and what it checks first: the rules alone."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neocloud.tracking.access import Denied, read

RUN = "api/2.0/mlflow/"


def test_a_run_s_calls_name_every_run_they_touch() -> None:
    call = read("GET", RUN + "runs/get", "run_id=a&run_uuid=b", b"")
    assert call.runs == {"a", "b"}  # a client sends both; the server takes either
    call = read("POST", RUN + "runs/log-batch", "", json.dumps({"run_id": "a", "metrics": []}).encode())
    assert call.runs == {"a"} and json.loads(call.body or b"") == {"run_id": "a", "metrics": []}
    assert read("GET", "ajax-api/2.0/mlflow/metrics/get-history", "run_id=a&metric_key=loss", b"").runs == {"a"}


def test_what_is_passed_on_is_what_was_read() -> None:
    # JSON with a key twice: the last one holds here, and the body passed on has only that one.
    call = read("POST", RUN + "runs/set-tag", "", b'{"run_id": "theirs", "run_id": "mine", "key": "k", "value": "v"}')
    assert call.runs == {"mine"} and call.body == json.dumps({"run_id": "mine", "key": "k", "value": "v"}).encode()
    with pytest.raises(Denied, match="twice"):
        read("GET", RUN + "runs/get", "run_id=mine&run_id=theirs", b"")


def test_experiments_are_named_where_the_call_names_them() -> None:
    assert read("POST", RUN + "runs/create", "", b'{"experiment_id": "3"}').experiments == {"3"}
    assert read("POST", RUN + "runs/search", "", b'{"experiment_ids": ["3", "4"]}').experiments == {"3", "4"}
    assert read("GET", RUN + "experiments/get", "experiment_id=3", b"").experiments == {"3"}
    assert read("GET", RUN + "experiments/get-by-name", "experiment_name=neocloud%2Fa", b"").names == {"neocloud/a"}
    for body in (b'{}', b'{"experiment_ids": []}', b'{"experiment_ids": "3"}', b'{"experiment_ids": [{"x": 1}]}'):
        with pytest.raises(Denied) as e:
            read("POST", RUN + "runs/search", "", body)
        assert e.value.status == 400 and "experiment_ids" in str(e.value)


def test_artifacts_are_named_by_experiment_and_run_and_never_climb_out() -> None:
    call = read("PUT", "api/2.0/mlflow-artifacts/artifacts/3/r1/artifacts/model.bin", "", b"")
    assert (call.experiments, call.runs, call.body) == ({"3"}, {"r1"}, None)  # its bytes go on as they come
    listing = read("GET", "api/2.0/mlflow-artifacts/artifacts", "path=3%2Fr1%2Fartifacts", b"")
    assert (listing.experiments, listing.runs) == ({"3"}, {"r1"})
    for path in ("3/../4/r2", "3/r1/%2e%2e/%2e%2e/4", "/etc/passwd", "3\\..\\4"):
        with pytest.raises(Denied) as e:
            read("GET", "api/2.0/mlflow-artifacts/artifacts/" + path, "", b"")
        assert e.value.status == 400
    with pytest.raises(Denied, match="within one of your runs"):
        read("PUT", "api/2.0/mlflow-artifacts/artifacts/3", "", b"")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", RUN + "experiments/create"), ("POST", RUN + "experiments/delete"), ("POST", RUN + "experiments/search"),
    ("POST", RUN + "registered-models/create"), ("GET", RUN + "registered-models/search"),
    ("POST", "api/2.0/mlflow/users/create"), ("GET", "static-files/index.html"), ("GET", ""),
    ("DELETE", RUN + "runs/get"), ("POST", "api/3.0/mlflow/traces"),
])
def test_everything_else_is_refused_saying_what_passes(method: str, path: str) -> None:
    with pytest.raises(Denied) as e:
        read(method, path, "", b"{}")
    assert e.value.status == 403 and e.value.code == "PERMISSION_DENIED" and "own experiment" in str(e.value)


def test_a_body_that_is_not_a_json_object_is_a_clear_400() -> None:
    for body in (b"[1]", b"not json", b'"run"'):
        with pytest.raises(Denied) as e:
            read("POST", RUN + "runs/update", "", body)
        assert e.value.status == 400 and "JSON" in str(e.value)


ids = st.text(alphabet="abcdef0123456789", min_size=1, max_size=8)


@given(st.dictionaries(st.sampled_from(["run_id", "run_uuid", "key", "value"]), ids, min_size=1))
def test_no_run_id_in_a_body_goes_unchecked(body: dict[str, str]) -> None:
    try:
        call = read("POST", RUN + "runs/set-tag", "", json.dumps(body).encode())
    except Denied as e:
        assert not {"run_id", "run_uuid"} & body.keys() and e.status == 400
        return
    assert call.runs == {body[k] for k in ("run_id", "run_uuid") if k in body}
    assert json.loads(call.body or b"") == body
