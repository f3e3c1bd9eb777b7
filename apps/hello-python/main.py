"""The course's hello-python app: greets NAME (default "World") and names the pod that answered.

Two plain-text lines, so a probe can read both the greeting and which replica served it:

    Hello World!
    Hostname: hello-python-7d9c6b5f4-x2k8q
"""
import os
import socket

from flask import Flask, Response

app = Flask(__name__)


@app.route("/")
def hello() -> Response:
    name = os.environ.get("NAME", "World")
    body = f"Hello {name}!\nHostname: {socket.gethostname()}\n"
    return Response(body, mimetype="text/plain")


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "5000")))
