"""LocalStack stand-in: moto server on 0.0.0.0:4566, plus LocalStack's
GET /_localstack/health, and the init scripts of
/etc/localstack/init/ready.d (*.sh, in name order) run once it serves."""
import glob
import json
import signal
import subprocess
import sys
import threading

from moto.moto_server.werkzeug_app import (DomainDispatcherApplication,
                                           create_backend_app)
from werkzeug.serving import make_server

PORT = 4566
READY_D = "/etc/localstack/init/ready.d"


def with_health(inner):
    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/_localstack/health":
            body = json.dumps({"services": {"sqs": "running", "dynamodb": "running"}}).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        return inner(environ, start_response)
    return app


def run_init_scripts():
    for script in sorted(glob.glob(READY_D + "/*.sh")):
        rc = subprocess.run(["bash", script], check=False).returncode
        print(f"localstack stand-in: {script} exited {rc}", flush=True)


def main():
    # PID 1 gets no default signal actions: stop on SIGTERM explicitly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = make_server("0.0.0.0", PORT,
                         with_health(DomainDispatcherApplication(create_backend_app)),
                         threaded=True)
    threading.Thread(target=run_init_scripts, daemon=True).start()
    print(f"localstack stand-in: moto on {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
