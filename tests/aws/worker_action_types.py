"""Custom action types through boto3, as a worker's setup script would
manage them: create, list, get, delete, and the refusals CodePipeline
gives. Prints what it saw as one JSON line.

usage: worker_action_types.py PROVIDER
"""
import json
import sys

import boto3

from common import code_of

provider = sys.argv[1]
codepipeline = boto3.client("codepipeline")


declaration = dict(
    category="Deploy",
    provider=provider,
    version="1",
    settings={"entityUrlTemplate": "https://deploy.example.test/"},
    configurationProperties=[
        {"name": "Environment", "required": True, "key": True, "secret": False, "queryable": True, "type": "String"}
    ],
    inputArtifactDetails={"minimumCount": 0, "maximumCount": 1},
    outputArtifactDetails={"minimumCount": 0, "maximumCount": 0},
    tags=[{"key": "team", "value": "web"}],
)
created = codepipeline.create_custom_action_type(**declaration)
custom = codepipeline.list_action_types(actionOwnerFilter="Custom")["actionTypes"]
plugins = codepipeline.list_action_types(actionOwnerFilter="Sluice")["actionTypes"]
got = codepipeline.get_action_type(category="Deploy", owner="Custom", provider=provider, version="1")["actionType"]
seen = {
    "created": created["actionType"]["id"],
    "tags": created.get("tags"),
    "custom": sorted(t["id"]["provider"] for t in custom),
    "pluginOwners": sorted({t["id"]["owner"] for t in plugins}),
    "hasShell": any(t["id"]["provider"] == "shell" for t in plugins),
    "executor": got["executor"]["type"],
    "queryable": got["properties"][0]["queryable"],
    "twice": code_of(lambda: codepipeline.create_custom_action_type(**declaration)),
    "badQueryable": code_of(
        lambda: codepipeline.create_custom_action_type(
            **{**declaration, "version": "9", "configurationProperties": [
                {"name": "Environment", "required": False, "key": True, "secret": False, "queryable": True}
            ]}
        )
    ),
    "unknown": code_of(
        lambda: codepipeline.get_action_type(category="Deploy", owner="Custom", provider="Nobody", version="1")
    ),
    "aws": codepipeline.list_action_types(actionOwnerFilter="AWS")["actionTypes"],
}
codepipeline.delete_custom_action_type(category="Deploy", provider=provider, version="1")
seen["deleteAgain"] = code_of(
    lambda: codepipeline.delete_custom_action_type(category="Deploy", provider=provider, version="1")
)
seen["recreate"] = code_of(lambda: codepipeline.create_custom_action_type(**declaration))
seen["next"] = codepipeline.create_custom_action_type(**{**declaration, "version": "2"})["actionType"]["id"]["version"]
print(json.dumps(seen))
