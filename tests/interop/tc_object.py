"""Object artifacts through the official Python client, against chainlock's dev queue.

Usage: tc_object.py ROOT_URL CLIENT_ID ACCESS_TOKEN TASK_ID RUST_ARTIFACT SHA256 PY_ARTIFACT
1. Reads RUST_ARTIFACT (uploaded by chainlock's queue client as storageType "object") back
   with taskcluster.download.downloadArtifactToBuf (queue `artifact`/`latestArtifact`, object
   credentials, startDownload getUrl, hash verification) and checks its sha256.
2. Uploads PY_ARTIFACT itself: createArtifact (object), taskcluster.upload.uploadFromBuf with
   the returned credentials, finishArtifact. The bytes are b"py-object\\n" * 3000.
3. Refusals: finishArtifact before the object is finished, finishUpload with a wrong hash,
   and the upload credentials of one object used for another.
Prints OK and exits 0 on success.
"""
import datetime
import hashlib
import sys

import taskcluster
import taskcluster.download
import taskcluster.upload


def expect_error(status_code, call, *args):
    try:
        call(*args)
    except taskcluster.exceptions.TaskclusterRestFailure as e:
        assert e.status_code == status_code, (e.status_code, e.body)
        return e.body
    raise AssertionError(f"{call.__name__} did not fail")


def create_object(queue, task_id, name):
    expires = taskcluster.fromNowJSON("1 day")
    art = queue.createArtifact(task_id, "0", name, {
        "storageType": "object", "expires": expires, "contentType": "text/plain",
    })
    assert art["storageType"] == "object", art
    assert art["name"] == f"t/{task_id}/0/{name}", art
    obj = taskcluster.Object({"rootUrl": queue.options["rootUrl"],
                              "credentials": art["credentials"], "maxRetries": 0})
    return art, obj


def main():
    root_url, client_id, access_token, task_id, rust_name, sha256, py_name = sys.argv[1:8]
    queue = taskcluster.Queue({"rootUrl": root_url, "maxRetries": 0,
                               "credentials": {"clientId": client_id, "accessToken": access_token}})

    # 1. What chainlock uploaded, read back by the official downloader (hashes verified).
    for run_id in ("0", None):
        data, content_type = taskcluster.download.downloadArtifactToBuf(
            taskId=task_id, runId=run_id, name=rust_name, queueService=queue)
        assert hashlib.sha256(data).hexdigest() == sha256, "content differs"
        assert content_type == "application/octet-stream", content_type
    content = queue.artifact(task_id, "0", rust_name)
    assert content["storageType"] == "object" and "credentials" in content, content

    # 2. The official uploader against the dev queue's object service.
    data = b"py-object\n" * 3000
    art, obj = create_object(queue, task_id, py_name)
    # Not finished yet: finishArtifact refuses, the artifact is not listed.
    expect_error(400, queue.finishArtifact, task_id, "0", py_name, {"uploadId": art["uploadId"]})
    listed = [a["name"] for a in queue.listArtifacts(task_id, "0")["artifacts"]]
    assert py_name not in listed, listed
    taskcluster.upload.uploadFromBuf(
        projectId=art["projectId"], name=art["name"], contentType="text/plain",
        contentLength=len(data), expires=art["expires"], uploadId=art["uploadId"],
        objectService=obj, data=data)
    queue.finishArtifact(task_id, "0", py_name, {"uploadId": art["uploadId"]})
    listed = [a["name"] for a in queue.listArtifacts(task_id, "0")["artifacts"]]
    assert py_name in listed, listed
    back, _ = taskcluster.download.downloadArtifactToBuf(
        taskId=task_id, runId="0", name=py_name, queueService=queue)
    assert bytes(back) == data

    # 3. A wrong hash is refused at finishUpload; one object's credentials do not reach another.
    art2, obj2 = create_object(queue, task_id, py_name + ".bad")
    up = obj2.createUpload(art2["name"], {
        "projectId": art2["projectId"], "uploadId": art2["uploadId"], "expires": art2["expires"],
        "proposedUploadMethods": {"putUrl": {"contentType": "text/plain", "contentLength": 5}}})
    put = up["uploadMethod"]["putUrl"]
    import urllib.request
    req = urllib.request.Request(put["url"], data=b"hello", method="PUT", headers=put["headers"])
    urllib.request.urlopen(req).read()
    expect_error(400, obj2.finishUpload, art2["name"], {
        "projectId": art2["projectId"], "uploadId": art2["uploadId"],
        "hashes": {"sha256": hashlib.sha256(b"other").hexdigest()}})
    expect_error(403, obj.createUpload, art2["name"], {
        "projectId": art2["projectId"], "uploadId": art2["uploadId"], "expires": art2["expires"],
        "proposedUploadMethods": {}})
    print("OK object artifacts round-trip through the official client")


if __name__ == "__main__":
    main()
