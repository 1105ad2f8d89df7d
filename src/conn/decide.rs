//! Where a connection goes after its turn: a pure function of what is
//! known about it (`Facts`), tested by a table below. `Server::settle`
//! gathers the facts, calls `decide`, and carries the answer out through
//! the one transition function.

use super::Kind;
use crate::http::CloseKind;
use crate::pubsub::Mode;

/// What is known about a connection at the end of its turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    // The socket, as the last events and calls left it.
    pub readable: bool,
    pub writable: bool,
    /// The client shut its write half.
    pub eof: bool,
    pub failed: bool,
    // The session.
    /// Subscribed, and how.
    pub sub: Option<Mode>,
    /// A publish waits for the broker's answer.
    pub awaiting: bool,
    /// No further request will be read; how to close once output is out.
    pub done: Option<CloseKind>,
    /// Output not yet written.
    pub pending: bool,
    /// Output below the high-water mark (back-pressure, Gettys & Freier §9).
    pub out_room: bool,
    pub has_input: bool,
    /// The input holds no complete request.
    pub need_input: bool,
    pub in_room: bool,
    pub in_body: bool,
    pub served_any: bool,
    /// A request was answered (or a subscription started) this turn.
    pub answered: bool,
    /// Bytes went out this turn.
    pub wrote: bool,
    // A closing socket.
    /// Drained more than `LINGER_MAX_BYTES`.
    pub drained_past_limit: bool,
    // The server.
    pub draining: bool,
    /// Test-only naive closing (`LINGER_TEST_ABORTIVE_CLOSE`).
    pub abortive: bool,
}

impl Facts {
    /// A connection in `kind` with nothing to say: socket drained and
    /// writable, no input, no output.
    pub fn quiet(kind: Kind) -> Facts {
        Facts {
            kind,
            readable: false,
            writable: true,
            eof: false,
            failed: false,
            sub: None,
            awaiting: false,
            done: None,
            pending: false,
            out_room: true,
            has_input: false,
            need_input: false,
            in_room: true,
            in_body: false,
            served_any: false,
            answered: false,
            wrote: false,
            drained_past_limit: false,
            draining: false,
            abortive: false,
        }
    }
}

/// Something worth counting that the decision saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    Nothing,
    /// The client sent its FIN first: TIME_WAIT lands on its side.
    ClientClosedFirst,
    /// Input is waiting but this connection's queues are full: it is not
    /// read, and its TCP window closes until they drain (§9).
    Stalled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    pub kind: Kind,
    /// Give it a turn next time: edge-triggered readiness will not remind
    /// us of work a budget left undone.
    pub requeue: bool,
    /// Restart the state's timer although the state stays the same.
    pub restamp: bool,
    /// End the subscription now, with its last words (then decide again).
    pub end_sub: bool,
    pub note: Note,
}

impl Next {
    fn to(kind: Kind) -> Next {
        Next { kind, requeue: false, restamp: false, end_sub: false, note: Note::Nothing }
    }

    fn requeue(mut self, yes: bool) -> Next {
        self.requeue = yes;
        self
    }

    fn restamp(mut self, yes: bool) -> Next {
        self.restamp = yes;
        self
    }

    fn note(mut self, note: Note) -> Next {
        self.note = note;
        self
    }
}

// Inlined into its one caller, `settle`: the facts then live in
// registers instead of being written out and read back, every turn for
// every connection served.
#[inline]
pub fn decide(f: &Facts) -> Next {
    match f.kind {
        Kind::Closed => Next::to(Kind::Closed),
        Kind::AwaitFin if f.eof => Next::to(Kind::Closed).note(Note::ClientClosedFirst),
        Kind::AwaitFin if f.failed => Next::to(Kind::Closed),
        Kind::AwaitFin => Next::to(Kind::AwaitFin).requeue(f.readable),
        Kind::Lingering if f.eof || f.failed || f.drained_past_limit => Next::to(Kind::Closed),
        Kind::Lingering => Next::to(Kind::Lingering).requeue(f.readable),
        _ => decide_open(f),
    }
}

#[inline]
fn decide_open(f: &Facts) -> Next {
    if f.failed {
        return Next::to(Kind::Closed);
    }
    if f.awaiting {
        // A publish waits for the broker: held, and nothing behind it is
        // served first (responses go in request order).
        if f.pending {
            return Next::to(Kind::Writing).requeue(f.writable).restamp(f.wrote);
        }
        return Next::to(Kind::Held).restamp(f.answered);
    }
    if let Some(mode) = f.sub {
        // Held or streaming until the subscription ends. A client that
        // shut its write half still reads: it keeps its subscription.
        if f.pending {
            return Next::to(Kind::Writing).requeue(f.writable).restamp(f.wrote);
        }
        if f.has_input {
            // A request behind it ends it first (RFC 6202 §5.2): a turn.
            return Next::to(Kind::Serving).requeue(true);
        }
        if f.eof && mode != Mode::LongPoll {
            // A stream has no answer to wait for, and only writing would
            // tell a half-closed client from one that is gone: end it
            // well-formed (its last chunk) and close.
            return Next { end_sub: true, ..Next::to(Kind::Streaming) };
        }
        let kind = if mode == Mode::LongPoll { Kind::Held } else { Kind::Streaming };
        return Next::to(kind).requeue(f.readable && !f.eof).restamp(f.answered);
    }
    if let Some(close) = f.done {
        if f.pending {
            // Keep writing, and keep reading what the client still sends
            // (discarded), or its writes block and it never reads ours.
            return Next::to(Kind::Writing).requeue(f.writable || f.readable).restamp(f.wrote);
        }
        if f.abortive {
            return Next::to(Kind::Closed);
        }
        if f.eof {
            return Next::to(Kind::Closed).note(Note::ClientClosedFirst);
        }
        return Next::to(match close {
            CloseKind::ClientFirst => Kind::AwaitFin,
            CloseKind::ServerFirst => Kind::Lingering,
        });
    }
    if f.eof && !f.pending && (!f.has_input || f.need_input) {
        // The client finished sending and all it asked is answered.
        return Next::to(Kind::Closed).note(Note::ClientClosedFirst);
    }
    let more_read = f.readable && !f.eof && f.in_room && f.out_room;
    let more_serve = f.has_input && !f.need_input && f.out_room;
    let more_write = f.pending && f.writable;
    let note = if f.readable && !f.eof && !more_read { Note::Stalled } else { Note::Nothing };
    let next = if f.pending && !f.writable {
        // The client is not taking what it asked for.
        Next::to(Kind::Writing).restamp(f.wrote)
    } else if more_serve {
        Next::to(Kind::Serving)
    } else if f.pending {
        // Writable: the budget ran out, or output waits to be batched.
        Next::to(Kind::Writing).restamp(f.wrote)
    } else if f.has_input || f.in_body {
        // A head or body in progress: the header timer runs from when it
        // started, so a slowloris gains nothing by trickling.
        Next::to(Kind::Reading).restamp(f.answered)
    } else if f.draining && !f.readable {
        Next::to(Kind::Lingering)
    } else if f.served_any {
        Next::to(Kind::Idle).restamp(f.answered)
    } else {
        // Nothing asked yet: the header timer runs from accept, so a client
        // that connects and stays silent is not taken for a keep-alive one.
        Next::to(Kind::Reading)
    };
    next.requeue(more_read || more_serve || more_write).note(note)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;

    /// One row: a starting state, what changed from `Facts::quiet`, and
    /// the expected (state, requeue, restamp).
    struct Row {
        name: &'static str,
        facts: Facts,
        expect: (Kind, bool, bool),
    }

    fn row(name: &'static str, kind: Kind, set: impl Fn(&mut Facts), expect: (Kind, bool, bool)) -> Row {
        let mut facts = Facts::quiet(kind);
        set(&mut facts);
        Row { name, facts, expect }
    }

    fn rows() -> Vec<Row> {
        vec![
            // Reading a first request.
            row("silent newcomer waits on the header timer", Reading, |_| {}, (Reading, false, false)),
            row(
                "a partial head keeps its stamp",
                Reading,
                |f| {
                    f.has_input = true;
                    f.need_input = true;
                },
                (Reading, false, false),
            ),
            row("more bytes to read", Reading, |f| f.readable = true, (Reading, true, false)),
            row("requests left for the next turn", Reading, |f| f.has_input = true, (Serving, true, false)),
            row(
                "answered, all written: idle",
                Reading,
                |f| {
                    f.served_any = true;
                    f.answered = true;
                },
                (Idle, false, true),
            ),
            row("inside a body with nothing buffered", Reading, |f| f.in_body = true, (Reading, false, false)),
            // Idle and reuse.
            row(
                "idle again after a request restarts the idle timer",
                Idle,
                |f| {
                    f.served_any = true;
                    f.answered = true;
                },
                (Idle, false, true),
            ),
            row("idle with nothing new keeps its place", Idle, |f| f.served_any = true, (Idle, false, false)),
            row(
                "draining closes an idle connection",
                Idle,
                |f| {
                    f.served_any = true;
                    f.draining = true;
                },
                (Lingering, false, false),
            ),
            row(
                "draining spares one with bytes arriving",
                Idle,
                |f| {
                    f.served_any = true;
                    f.draining = true;
                    f.readable = true;
                },
                (Idle, true, false),
            ),
            row(
                "the client closed after its answers",
                Idle,
                |f| {
                    f.served_any = true;
                    f.eof = true;
                },
                (Closed, false, false),
            ),
            // Writing.
            row(
                "socket full: wait on the send timer",
                Serving,
                |f| {
                    f.pending = true;
                    f.writable = false;
                    f.has_input = true;
                    f.need_input = true;
                },
                (Writing, false, false),
            ),
            row(
                "socket full, room to answer more: serve on",
                Serving,
                |f| {
                    f.pending = true;
                    f.writable = false;
                    f.has_input = true;
                },
                (Writing, true, false),
            ),
            row(
                "progress restarts the send timer",
                Writing,
                |f| {
                    f.pending = true;
                    f.writable = false;
                    f.wrote = true;
                },
                (Writing, false, true),
            ),
            row(
                "budget spent, socket writable: write next turn",
                Writing,
                |f| {
                    f.pending = true;
                    f.wrote = true;
                },
                (Writing, true, true),
            ),
            // Defect 14.4: a request behind a large response is not a head.
            row(
                "pipelined head behind a download is not on the header timer",
                Writing,
                |f| {
                    f.pending = true;
                    f.out_room = false;
                    f.has_input = true;
                    f.need_input = true;
                },
                (Writing, true, false),
            ),
            row(
                "small output held for batching, requests queued",
                Serving,
                |f| {
                    f.pending = true;
                    f.has_input = true;
                },
                (Serving, true, false),
            ),
            row(
                "back-pressure: readable but queues full",
                Writing,
                |f| {
                    f.pending = true;
                    f.writable = false;
                    f.out_room = false;
                    f.readable = true;
                },
                (Writing, false, false),
            ),
            // Closing decided.
            row(
                "client asked to close, all written: it closes first",
                Serving,
                |f| {
                    f.done = Some(CloseKind::ClientFirst);
                },
                (AwaitFin, false, false),
            ),
            row(
                "server decided to close: linger",
                Serving,
                |f| {
                    f.done = Some(CloseKind::ServerFirst);
                },
                (Lingering, false, false),
            ),
            // Defect 14.1: a finished connection with output pending keeps
            // draining its input while its budget runs out.
            row(
                "done, output stuck, input still coming: keep draining",
                Writing,
                |f| {
                    f.done = Some(CloseKind::ServerFirst);
                    f.pending = true;
                    f.writable = false;
                    f.readable = true;
                },
                (Writing, true, false),
            ),
            row(
                "done and the client already closed",
                Writing,
                |f| {
                    f.done = Some(CloseKind::ServerFirst);
                    f.eof = true;
                },
                (Closed, false, false),
            ),
            row(
                "abortive mode closes at once",
                Writing,
                |f| {
                    f.done = Some(CloseKind::ServerFirst);
                    f.abortive = true;
                },
                (Closed, false, false),
            ),
            row("a failed socket is dropped", Writing, |f| f.failed = true, (Closed, false, false)),
            // Subscriptions.
            row(
                "a new long poll is held",
                Serving,
                |f| {
                    f.sub = Some(Mode::LongPoll);
                    f.answered = true;
                },
                (Held, false, true),
            ),
            row("a stream stays streaming", Streaming, |f| f.sub = Some(Mode::Sse), (Streaming, false, false)),
            row(
                "a stream with output stuck waits on the send timer",
                Streaming,
                |f| {
                    f.sub = Some(Mode::Stream);
                    f.pending = true;
                    f.writable = false;
                },
                (Writing, false, false),
            ),
            row(
                "a request behind a held poll gets a turn",
                Held,
                |f| {
                    f.sub = Some(Mode::LongPoll);
                    f.has_input = true;
                },
                (Serving, true, false),
            ),
            row(
                "a half-closed subscriber is still answered",
                Held,
                |f| {
                    f.sub = Some(Mode::LongPoll);
                    f.eof = true;
                },
                (Held, false, false),
            ),
            // Closing sockets.
            row("the client's FIN ends the wait", AwaitFin, |f| f.eof = true, (Closed, false, false)),
            row("bytes during the wait are drained", AwaitFin, |f| f.readable = true, (AwaitFin, true, false)),
            row("lingering drains on", Lingering, |f| f.readable = true, (Lingering, true, false)),
            row("lingering ends at EOF", Lingering, |f| f.eof = true, (Closed, false, false)),
            row(
                "lingering ends past the byte limit",
                Lingering,
                |f| f.drained_past_limit = true,
                (Closed, false, false),
            ),
            row("closed stays closed", Closed, |f| f.readable = true, (Closed, false, false)),
        ]
    }

    #[test]
    fn every_row_of_the_state_table() {
        let mut failures = Vec::new();
        for r in rows() {
            let n = decide(&r.facts);
            if (n.kind, n.requeue, n.restamp) != r.expect {
                failures.push(format!("{}: got {:?}, want {:?}", r.name, (n.kind, n.requeue, n.restamp), r.expect));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn a_stream_whose_client_closed_is_ended() {
        let mut f = Facts::quiet(Streaming);
        f.sub = Some(Mode::Sse);
        f.eof = true;
        assert!(decide(&f).end_sub);
        f.sub = Some(Mode::LongPoll);
        assert!(!decide(&f).end_sub);
    }

    #[test]
    fn who_closes_first_is_noted() {
        let mut f = Facts::quiet(AwaitFin);
        f.eof = true;
        assert_eq!(decide(&f).note, Note::ClientClosedFirst);
        let mut f = Facts::quiet(Writing);
        f.pending = true;
        f.writable = false;
        f.out_room = false;
        f.readable = true;
        assert_eq!(decide(&f).note, Note::Stalled);
    }
}
