"""ListPipelines through boto3: prints {"names": [...]} of every pipeline."""
import json

import boto3

client = boto3.client("codepipeline")
names = [p["name"] for p in client.list_pipelines()["pipelines"]]
print(json.dumps({"names": names}))
