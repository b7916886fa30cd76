//! A minimal server-sent events parser: enough for the gateway's `progress` events, fed
//! with whatever chunks the network delivers (an event may span chunks, and a chunk may
//! end in the middle of a UTF-8 character).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `message` when the event named none.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not complete yet.
    pending: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if let Some(event) = self.line(line) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            // A blank line dispatches; one without data (a bare `event:`) is dropped.
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            let event = if event.is_empty() { "message".to_owned() } else { event };
            return Some(Event { event, data: data.join("\n") });
        }
        if line.starts_with(':') {
            return None; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {} // id, retry: not needed here
        }
        None
    }
}
