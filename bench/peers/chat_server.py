"""The chat-runtime shape: a loopback HTTP server that runs one forward pass per text.

This is how the friendly interactive runtimes serve embeddings: a request carries one
text, the server tokenises it, runs the model on a batch of one and answers, and the client
sends the next text when the answer arrives (one request in flight). The weights, the
precision and the kernels are corpusmill's own (`TransformerEncoder`), so the only thing
that differs from the batch engine is the shape of the work.

    python -m bench.peers.chat_server --port 18080 [--model PATH] [--dtype auto]
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, HTTPServer


def make_handler(encoder):
    class EmbedOne(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as chat clients do

        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            text = json.loads(body)["input"]
            tokens = encoder.tokenize([text])
            vector = encoder.forward(encoder.collate(tokens))[0]
            payload = json.dumps({"embedding": vector.tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):  # noqa: N802
            payload = json.dumps({"ready": True, "dtype": encoder.dtype_name}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # one line per request would dominate the output
            pass

    return EmbedOne


def main() -> None:
    from corpusmill.model.encoder import TransformerEncoder
    from corpusmill.model.files import default_model_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", default="")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    encoder = TransformerEncoder(
        args.model or default_model_path(), dtype=args.dtype, device=args.device
    )
    for _ in range(3):  # warm-up, as the engine gets
        encoder.forward(encoder.collate(encoder.tokenize(["warm up"])))
    HTTPServer(("127.0.0.1", args.port), make_handler(encoder)).serve_forever()


if __name__ == "__main__":
    main()
