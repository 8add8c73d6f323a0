"""A Flask app with sync views: JSON, forms, uploads, streaming, errors."""

import threading

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.get("/json")
def as_json():
    return jsonify(
        framework="flask",
        args=request.args.to_dict(),
        scheme=request.scheme,
        remote_addr=request.remote_addr,
        host=request.host,
        url=request.url,
        script_root=request.script_root,
        thread=threading.current_thread().name,
    )


@app.get("/user/<name>")
def user(name):
    return jsonify(user=name)


@app.post("/form")
def form():
    return jsonify(form=request.form.to_dict(flat=False))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), note=request.form.get("note"))


@app.post("/json-echo")
def json_echo():
    payload = request.get_json()
    return jsonify(received=payload, count=len(payload["items"])), 201


@app.get("/redirect")
def go_home():
    return redirect("/json?from=redirect")


@app.get("/stream")
def stream():
    def generate():
        for i in range(5):
            yield f"part {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.get("/cookie")
def cookie():
    response = jsonify(seen=request.cookies.get("flavour"))
    response.set_cookie("flavour", "oatmeal")
    return response


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")
