// A WebSocket test double: records what the client sends and lets a test
// play the server (open, welcome, frames, acks, closes).

/** Returns a fresh WebSocket class and the list of sockets it created. */
export function fakeServer() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.acked = 0; // how many of `sent` ackAll() already answered
      this.readyState = 0;
      this.closedByClient = null;
      sockets.push(this);
    }

    send(text) {
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedByClient = { code, reason };
      this.readyState = 2;
    }

    // -- the server's side --

    /** The `token` query parameter of the URL the client opened. */
    get token() {
      return new URL(this.url).searchParams.get('token');
    }

    /** Accepts the connection and sends the welcome. */
    welcome(user = 'ann', conn = sockets.length) {
      this.readyState = 1;
      this.onopen?.({});
      this.receive({ op: 'welcome', user, conn });
    }

    /** Delivers one frame (an object is sent as JSON text). */
    receive(frame) {
      const data = typeof frame === 'string' || frame instanceof ArrayBuffer ? frame : JSON.stringify(frame);
      this.onmessage?.({ data });
    }

    /** Acks every request sent since the last call; returns them. */
    ackAll() {
      const fresh = this.sent.slice(this.acked);
      this.acked = this.sent.length;
      for (const req of fresh) this.receive({ op: 'ack', id: req.id });
      return fresh;
    }

    /** Closes from the server's side (or fails the connection: 1006). */
    serverClose(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { WebSocket: FakeWebSocket, sockets };
}
