"""Requests an attacker would send to the AWS endpoint, each refused with
the error AWS gives: a wrong secret, an unknown or revoked key, a body
changed after signing, a request replayed as another operation, a stale
request replayed, an unsigned target, no signature at all, an oversized
and a malformed body. Also: the key's user is who the controller sees.

argv: PIPELINE REVOKED_KEY_ID REVOKED_SECRET (the environment's key is
a valid one)."""
import datetime
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from unittest import mock

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from common import client, connection as open_connection, done, error_code, ssl_context

endpoint = os.environ["AWS_ENDPOINT_URL"]
region = os.environ["AWS_DEFAULT_REGION"]
key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
pipeline = sys.argv[1]
result = {}


def as_key(key, secret):
    return boto3.client("codepipeline", aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


result["wrong_secret"] = error_code(lambda: as_key(key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")).list_pipelines())
result["unknown_key"] = error_code(lambda: as_key("AKSLAAAAAAAAAAAAAAAA", secret).list_pipelines())
result["revoked_key"] = error_code(lambda: as_key(sys.argv[2], sys.argv[3]).list_pipelines())


def signed(operation, body, when=None, headers=None):
    """A request signed as botocore signs it (at `when`, if given)."""
    request = AWSRequest("POST", endpoint + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": f"CodePipeline_20150709.{operation}",
        **(headers or {}),
    })
    credentials = Credentials(key_id, secret)
    if when is None:
        SigV4Auth(credentials, "codepipeline", region).add_auth(request)
    else:
        class Fixed(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return when

            @classmethod
            def now(cls, tz=None):
                return when.replace(tzinfo=tz) if tz else when

        with mock.patch("botocore.auth.datetime.datetime", Fixed):
            SigV4Auth(credentials, "codepipeline", region).add_auth(request)
    return request


def send(request, body=None, headers=None, drop=()):
    """Sends a request as it is or changed; the status and awsJson body."""
    all_headers = {k: v for k, v in dict(request.headers).items() if k.lower() not in drop}
    all_headers.update(headers or {})
    data = request.body if body is None else body
    http = urllib.request.Request(endpoint + "/", data=data, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(http, context=ssl_context()) as response:
            return {"status": response.status, "body": json.loads(response.read() or b"{}")}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        return {"status": e.code, "code": parsed.get("__type"), "message": parsed.get("message")}


body = json.dumps({"name": pipeline}).encode()
good = signed("GetPipeline", body)
result["genuine"] = send(good)["status"]
result["tampered_body"] = send(good, body=json.dumps({"name": "other"}).encode())
result["other_operation"] = send(good, headers={"X-Amz-Target": "CodePipeline_20150709.DeletePipeline"})
stale = signed("GetPipeline", body, when=datetime.datetime.utcnow() - datetime.timedelta(minutes=10))
result["stale"] = send(stale)
unsigned_target = signed("GetPipeline", body)
auth = unsigned_target.headers["Authorization"].replace("x-amz-target", "").replace(";;", ";").replace(";,", ",")
result["unsigned_target"] = send(unsigned_target, headers={"Authorization": auth})
result["no_signature"] = send(good, drop=("authorization",))
big = b"{" + b" " * (5 << 20) + b"}"
result["oversized"] = send(signed("GetPipeline", big))
result["malformed"] = send(signed("GetPipeline", b"{not json"))

# A request that cannot verify is refused on its headers: an unknown key
# announcing a 100 MiB body gets its answer without sending a byte of it.
connection = open_connection(endpoint)
connection.putrequest("POST", "/")
unknown = signed("GetPipeline", body)
for name, value in unknown.headers.items():
    if name.lower() != "content-length":
        connection.putheader(name, value.replace(key_id, "AKSLUNKNOWNUNKNOWNUN"))
connection.putheader("Content-Length", str(100 << 20))
connection.endheaders()
answer = connection.getresponse()
result["unread_body"] = {"status": answer.status, "code": json.loads(answer.read()).get("__type")}
connection.close()
result["unknown_target"] = send(signed("Frobnicate", b"{}"))

# Who the controller sees: the key's user started this run.
cp = client()
started = cp.start_pipeline_execution(name=pipeline)["pipelineExecutionId"]
execution = cp.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=started)["pipelineExecution"]
result["trigger_detail"] = execution["trigger"]["triggerDetail"]
done(result)
