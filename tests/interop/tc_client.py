"""Interop check: the official Taskcluster Python client against chainlock's dev queue.

Usage: tc_client.py ROOT_URL CLIENT_ID ACCESS_TOKEN TASK_QUEUE_ID
Creates a task with permanent credentials, claims it, resolves it with the claim's temporary
credentials, and checks the status. Prints OK and exits 0 on success.
"""
import sys

import taskcluster


def main():
    root_url, client_id, access_token, task_queue_id = sys.argv[1:5]
    queue = taskcluster.Queue({
        "rootUrl": root_url,
        "credentials": {"clientId": client_id, "accessToken": access_token},
        "maxRetries": 0,
    })
    task_id = taskcluster.slugId()
    queue.createTask(task_id, {
        "taskQueueId": task_queue_id,
        "created": taskcluster.stringDate(taskcluster.fromNow("0 seconds")),
        "deadline": taskcluster.stringDate(taskcluster.fromNow("1 hour")),
        "expires": taskcluster.stringDate(taskcluster.fromNow("1 day")),
        "payload": {"maxRunTime": 60},
        "metadata": {"name": "interop", "description": "python client interop",
                     "owner": "interop@example.com", "source": "https://example.com/interop"},
    })
    claim = queue.claimWork(task_queue_id, {"workerGroup": "py-wg", "workerId": "py-1", "tasks": 1})
    tasks = claim["tasks"]
    assert len(tasks) == 1, claim
    assert tasks[0]["status"]["taskId"] == task_id, tasks[0]["status"]
    run_id = tasks[0]["runId"]

    task_queue = taskcluster.Queue({
        "rootUrl": root_url,
        "credentials": tasks[0]["credentials"],
        "maxRetries": 0,
    })
    reclaimed = task_queue.reclaimTask(task_id, run_id)
    task_queue = taskcluster.Queue({
        "rootUrl": root_url,
        "credentials": reclaimed["credentials"],
        "maxRetries": 0,
    })
    task_queue.reportCompleted(task_id, run_id)

    status = queue.status(task_id)["status"]
    assert status["state"] == "completed", status
    assert status["runs"][run_id]["reasonResolved"] == "completed", status
    # Unauthenticated reads work too.
    anon = taskcluster.Queue({"rootUrl": root_url})
    assert anon.task(task_id)["taskQueueId"] == task_queue_id
    print("OK", task_id)


if __name__ == "__main__":
    main()
