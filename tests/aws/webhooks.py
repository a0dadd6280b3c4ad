"""PutWebhook/ListWebhooks/DeleteWebhook through boto3, mapped onto the
pipeline's Sluice webhook: the definition comes back without its secret,
deliveries to the URL are checked against the SecretToken (GitHub's
signature), tags on the webhook's ARN, and deleting twice succeeds.

argv: PIPELINE"""
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

from common import client, done, error_code, ssl_context

cp = client()
pipeline = sys.argv[1]
secret = "a-webhook-secret-of-some-length"
definition = {
    "name": "github-push",
    "targetPipeline": pipeline,
    "targetAction": "Checkout",
    "filters": [{"jsonPath": "$.ref", "matchEquals": "refs/heads/{Branch}"}],
    "authentication": "GITHUB_HMAC",
    "authenticationConfiguration": {"SecretToken": secret},
}
result = {}
put = cp.put_webhook(webhook=definition, tags=[{"key": "hook", "value": "gh"}])["webhook"]
result["put_url"] = put["url"]
result["put_arn"] = put["arn"]
result["put_secret_shown"] = "SecretToken" in put["definition"]["authenticationConfiguration"]
listed = cp.list_webhooks()["webhooks"]
result["listed"] = [(w["definition"]["name"], w["definition"]["targetPipeline"], w["definition"]["filters"]) for w in listed]
result["listed_secret_shown"] = any("SecretToken" in w["definition"]["authenticationConfiguration"] for w in listed)
result["tags"] = cp.list_tags_for_resource(resourceArn=put["arn"])["tags"]
result["unauthenticated"] = error_code(lambda: cp.put_webhook(webhook=dict(
    definition, authentication="UNAUTHENTICATED", authenticationConfiguration={})))


def deliver(key):
    body = json.dumps({"zen": "hello"}).encode()
    signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(put["url"], data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "ping", "X-Hub-Signature-256": signature})
    try:
        with urllib.request.urlopen(request, context=ssl_context()) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


result["delivery_signed"] = deliver(secret)
result["delivery_forged"] = deliver("not-the-secret-at-all")
cp.delete_webhook(name="github-push")
result["after_delete"] = cp.list_webhooks()["webhooks"]
result["delete_again"] = error_code(lambda: cp.delete_webhook(name="github-push"))
result["delivery_after_delete"] = deliver(secret)
done(result)
