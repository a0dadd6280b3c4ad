"""What a key may do through the AWS API: the pipelines list_pipelines
shows it, and what start_pipeline_execution of argv[1] raises (None if
it starts).

argv: PIPELINE"""
import sys

from common import client, done

cp = client()
result = {}
try:
    result["listed"] = sorted(p["name"] for p in cp.list_pipelines()["pipelines"])
except Exception as e:  # a refused or unknown key
    result["listed"] = {"code": getattr(e, "response", {}).get("Error", {}).get("Code"), "class": type(e).__name__}


try:
    cp.start_pipeline_execution(name=sys.argv[1])
    result["start"] = None
except Exception as e:
    response = getattr(e, "response", None)
    if response is None:
        raise
    result["start"] = {"code": response["Error"]["Code"], "message": response["Error"].get("Message", ""),
                       "status": response["ResponseMetadata"]["HTTPStatusCode"]}
done(result)
