"""Drives two chatbot-server instances through nginx (deploy/nginx-check.sh
starts them): register, log in, buy a WebSocket ticket, stream a chat over the
WebSocket, then resume the session on a new connection and get it replayed.
Prints one line per step; exits non-zero at the first check that fails."""

import json
import sys
import urllib.error
import urllib.request
import uuid

from websockets.sync.client import connect

BASE = sys.argv[1]  # http://127.0.0.1:<nginx port>
WS_BASE = BASE.replace("http://", "ws://", 1)
TIMEOUT = 20


def fail(what):
    print(f"nginx-check: FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def request(method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect(status, body, wanted, what):
    if status not in wanted:
        fail(f"{what}: HTTP {status} {body}")
    print(f"nginx-check: ok: {what} ({status})")


def ticket(token):
    status, body = request("POST", "/api/auth/ws-ticket", {}, token)
    expect(status, body, (200,), "POST /api/auth/ws-ticket")
    return body["ticket"]


def receive(ws):
    return json.loads(ws.recv(timeout=TIMEOUT))


def chat(token, content):
    """A new session: send one chat, return the session id and the answer."""
    with connect(f"{WS_BASE}/ws?ticket={ticket(token)}", open_timeout=TIMEOUT) as ws:
        connected = receive(ws)
        if connected.get("type") != "connected":
            fail(f"first WebSocket message: {connected}")
        ws.send(json.dumps({"type": "chat", "content": content}))
        tokens = []
        while True:
            msg = receive(ws)
            if msg["type"] == "stream-token":
                tokens.append(msg["token"])
            elif msg["type"] == "stream-end":
                if msg.get("status") != "completed":
                    fail(f"stream ended {msg}")
                break
            elif msg["type"] == "error":
                fail(f"error during the chat: {msg}")
        print(f"nginx-check: ok: streamed {len(tokens)} tokens over the WebSocket")
        return connected["sessionId"], "".join(tokens)


def replay(token, session_id):
    """Resumes `session_id` on a new connection (likely the other instance) from seq 0."""
    url = f"{WS_BASE}/ws?ticket={ticket(token)}&sessionId={session_id}&lastSeq=0"
    with connect(url, open_timeout=TIMEOUT) as ws:
        connected = receive(ws)
        if not connected.get("resumed"):
            fail(f"session not resumed: {connected}")
        types = []
        while not types or types[-1] != "stream-end":
            types.append(receive(ws)["type"])
        print(f"nginx-check: ok: resumed and replayed {len(types)} events")
        return types


def main():
    for _ in range(4):
        status, body = request("GET", "/health")
        expect(status, body, (200,), "GET /health")
    name = "ngx" + uuid.uuid4().hex[:12]
    password = "nginx-check-password"
    status, body = request(
        "POST",
        "/api/auth/register",
        {"username": name, "email": f"{name}@example.com", "password": password},
    )
    expect(status, body, (200, 201), "POST /api/auth/register")
    status, body = request("POST", "/api/auth/login", {"username": name, "password": password})
    expect(status, body, (200,), "POST /api/auth/login")
    token = body["token"]
    content = "Hello through nginx"
    session_id, answer = chat(token, content)
    if answer != f"You said: {content}":
        fail(f"the answer was {answer!r}")
    types = replay(token, session_id)
    if types[0] != "user-message" or "stream-token" not in types:
        fail(f"replayed {types}")


if __name__ == "__main__":
    main()
