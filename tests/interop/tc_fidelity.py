"""Fidelity check: answers of chainlock's dev queue that the official Python client sees.

Usage: tc_fidelity.py ROOT_URL CLIENT_ID ACCESS_TOKEN TASK_QUEUE_ID
Checks timestamp normalisation, status `priority`, error bodies (`requestInfo` and the message
trailer), cancelTask (the running run's reclaim gets 409), rerunTask, and artifact expiry (410).
Prints OK and exits 0 on success.
"""
import datetime
import sys
import time

import taskcluster


def queue_with(root_url, credentials):
    return taskcluster.Queue({"rootUrl": root_url, "credentials": credentials, "maxRetries": 0})


def expect_error(status_code, code, call, *args):
    try:
        call(*args)
    except taskcluster.exceptions.TaskclusterRestFailure as e:
        assert e.status_code == status_code, (e.status_code, e.body)
        assert e.body["code"] == code, e.body
        return e.body
    raise AssertionError(f"{call.__name__} did not fail")


def whole_seconds(delta):
    t = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + delta
    return t.isoformat()  # "+00:00", no fraction: the queue must answer ".000Z"


def define(task_queue_id, expires=datetime.timedelta(days=1)):
    return {
        "taskQueueId": task_queue_id,
        "created": whole_seconds(datetime.timedelta(0)),
        "deadline": whole_seconds(datetime.timedelta(hours=1)),
        "expires": whole_seconds(expires),
        "priority": "high",
        "payload": {"maxRunTime": 60},
        "metadata": {"name": "fidelity", "description": "python client fidelity",
                     "owner": "interop@example.com", "source": "https://example.com/interop"},
    }


def claim_one(queue, task_queue_id, task_id):
    claim = queue.claimWork(task_queue_id, {"workerGroup": "py-wg", "workerId": "py-1", "tasks": 1})
    tasks = claim["tasks"]
    assert len(tasks) == 1 and tasks[0]["status"]["taskId"] == task_id, claim
    return tasks[0]


def main():
    root_url, client_id, access_token, task_queue_id = sys.argv[1:5]
    queue = queue_with(root_url, {"clientId": client_id, "accessToken": access_token})

    # Timestamps come back normalised; the status has the priority.
    task_id = taskcluster.slugId()
    given = define(task_queue_id)
    status = queue.createTask(task_id, given)["status"]
    assert status["priority"] == "high", status
    stored = queue.task(task_id)
    for key in ("created", "deadline", "expires"):
        assert stored[key].endswith(".000Z") and stored[key][:19] == given[key][:19], (key, stored)
    assert queue.status(task_id)["status"]["priority"] == "high"

    # Error bodies: requestInfo and the message trailer.
    body = expect_error(404, "ResourceNotFound", queue.status, taskcluster.slugId())
    info = body["requestInfo"]
    assert info["method"] == "status", info
    assert set(info) == {"method", "params", "payload", "time"}, info
    assert "taskId" in info["params"], info
    assert info["time"].endswith("Z"), info
    assert "\n\n---\n\n* method:     status\n* errorCode:  ResourceNotFound\n" in body["message"], body
    assert "* statusCode: 404\n* time:       " in body["message"], body

    # cancelTask on a running task: the run resolves exception/canceled, the reclaim gets 409.
    claim = claim_one(queue, task_queue_id, task_id)
    run_id = claim["runId"]
    status = queue.cancelTask(task_id)["status"]
    assert status["state"] == "exception", status
    assert status["runs"][run_id]["reasonResolved"] == "canceled", status
    task_queue = queue_with(root_url, claim["credentials"])
    expect_error(409, "RequestConflict", task_queue.reclaimTask, task_id, run_id)
    expect_error(409, "RequestConflict", task_queue.reportCompleted, task_id, run_id)
    # Idempotent once resolved.
    assert queue.cancelTask(task_id)["status"]["runs"] == status["runs"]

    # rerunTask: a new pending run, reasonCreated rerun, retries reset; idempotent while pending.
    status = queue.rerunTask(task_id)["status"]
    assert status["state"] == "pending", status
    assert len(status["runs"]) == run_id + 2, status
    assert status["runs"][-1]["reasonCreated"] == "rerun", status
    assert status["retriesLeft"] == 5, status
    assert queue.rerunTask(task_id)["status"]["runs"] == status["runs"]
    claim = claim_one(queue, task_queue_id, task_id)
    assert claim["runId"] == run_id + 1, claim

    # Artifact expiry: an artifact past its expires answers 410 ResourceExpired.
    task_queue = queue_with(root_url, claim["credentials"])
    soon = taskcluster.stringDate(taskcluster.fromNow("2 seconds"))
    task_queue.createArtifact(task_id, claim["runId"], "public/soon", {
        "storageType": "reference", "expires": soon,
        "url": "https://example.com/soon", "contentType": "text/plain",
    })
    time.sleep(3)
    anon = taskcluster.Queue({"rootUrl": root_url, "maxRetries": 0})
    expect_error(410, "ResourceExpired", anon.getArtifact, task_id, claim["runId"], "public/soon")
    expect_error(410, "ResourceExpired", anon.getLatestArtifact, task_id, "public/soon")
    task_queue.reportCompleted(task_id, claim["runId"])
    print("OK", task_id)


if __name__ == "__main__":
    main()
