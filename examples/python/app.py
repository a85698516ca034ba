# A Lambda Python handler (`python3.x`, handler `app.handler`), run unmodified by AWS's
# awslambdaric. Build its package from the clone with
#   python3 -m zipfile -c app.zip examples/python/app.py
import platform


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name}")
    return {
        "message": f"Hello, {name}!",
        "runtime": f"python {platform.python_version()}",
        "request_id": context.aws_request_id,
    }
