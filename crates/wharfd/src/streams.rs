//! containerd's streams: bidirectional channels of `google.protobuf.Any` messages that a client
//! opens with `Streaming/Stream` under an id, for other services (Transfer) to pick up by
//! (namespace, id); and the flow control of containerd's transfer streaming helpers: the
//! receiving side grants credit with `WindowUpdate{update}`, the sending side sends
//! `Data{data}` chunks within it, and the end of the data is the sender closing its side.
//!
//! The Streaming adapter registers a [`Stream`] with [`StreamManager::register`] and keeps the
//! returned [`Registration`] for as long as the RPC lives; the Transfer adapter takes it with
//! [`StreamManager::take`] and reads it with [`receive`], writes it with [`send`], or sends
//! progress on it. Dropping a taken [`Stream`] ends the client's RPC (OK), or with an error
//! status sent first.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use wharf_api::types::transfer as tt;

pub const TYPE_DATA: &str = "containerd.types.transfer.Data";
pub const TYPE_WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";
pub const TYPE_PROGRESS: &str = "containerd.types.transfer.Progress";

/// Credit granted to a sender at once (containerd's helpers read 32 KiB at a time; a larger
/// window keeps the pipe full over the socket).
const WINDOW: i64 = 1 << 20;
/// Largest Data message sent, whatever the credit (gRPC clients' default limit is 4 MiB).
const MAX_CHUNK: usize = 256 << 10;
/// Bytes collected by [`StreamWriter`] before they are handed to the sender.
const WRITE_BUF: usize = 64 << 10;

/// A message as containerd's typeurl marshals it: the full message name, no URL prefix.
pub fn any<M: Message>(type_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_name.to_string(),
        value: m.encode_to_vec(),
    }
}

/// The message type an Any holds, whatever prefix the client's typeurl put before it.
pub fn kind(a: &prost_types::Any) -> &str {
    a.type_url.rsplit('/').next().unwrap_or("")
}

/// One client stream, as the service that uses it sees it.
pub struct Stream {
    /// What the client sends; `None` once it closed its side (end of data).
    pub incoming: tonic::Streaming<prost_types::Any>,
    /// What goes to the client; the RPC ends when this is dropped.
    pub outgoing: mpsc::UnboundedSender<Result<prost_types::Any, Status>>,
}

struct Slot {
    serial: u64,
    /// None once a service took it.
    stream: Option<Stream>,
}

/// The streams open in this daemon, by (namespace, id).
#[derive(Clone, Default)]
pub struct StreamManager {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    streams: HashMap<(String, String), Slot>,
}

/// Keeps a stream's id registered; dropped when its RPC ends, which frees the id.
pub struct Registration {
    manager: StreamManager,
    key: (String, String),
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.manager.inner.lock() {
            if inner
                .streams
                .get(&self.key)
                .is_some_and(|s| s.serial == self.serial)
            {
                inner.streams.remove(&self.key);
                tracing::debug!(namespace = %self.key.0, stream = %self.key.1, "stream closed");
            }
        }
    }
}

impl StreamManager {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Status> {
        self.inner
            .lock()
            .map_err(|_| Status::internal("stream registry lock poisoned"))
    }

    /// Registers `stream` under (ns, id); AlreadyExists while another stream holds that id.
    pub fn register(&self, ns: &str, id: &str, stream: Stream) -> Result<Registration, Status> {
        let mut inner = self.lock()?;
        let key = (ns.to_string(), id.to_string());
        if inner.streams.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "stream {id:?}: already exists"
            )));
        }
        inner.next += 1;
        let serial = inner.next;
        inner.streams.insert(
            key.clone(),
            Slot {
                serial,
                stream: Some(stream),
            },
        );
        tracing::debug!(namespace = %ns, stream = %id, "stream registered");
        Ok(Registration {
            manager: self.clone(),
            key,
            serial,
        })
    }

    /// Takes the stream (ns, id) for a service to use; its id stays taken until its RPC ends.
    pub fn take(&self, ns: &str, id: &str) -> Result<Stream, Status> {
        let mut inner = self.lock()?;
        let slot = inner
            .streams
            .get_mut(&(ns.to_string(), id.to_string()))
            .ok_or_else(|| Status::not_found(format!("stream {id:?}: not found")))?;
        slot.stream
            .take()
            .ok_or_else(|| Status::failed_precondition(format!("stream {id:?} is already in use")))
    }
}

/// A blocking reader of the data a client sends on a stream (for the archive import, which runs
/// in `spawn_blocking`). EOF when the client closes its side; an error when the stream breaks.
pub struct StreamReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Receives `Data` from the client, granting credit as the reader takes the bytes. The stream
/// is closed (the client's RPC ends) at the end of the data or when the reader is dropped.
pub fn receive(stream: Stream) -> StreamReader {
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::spawn(async move {
        let Stream {
            mut incoming,
            outgoing,
        } = stream;
        let update = |n: i64| {
            let update = tt::WindowUpdate {
                update: i32::try_from(n).unwrap_or(i32::MAX),
            };
            outgoing.send(Ok(any(TYPE_WINDOW_UPDATE, &update))).is_ok()
        };
        let mut window = WINDOW;
        if !update(WINDOW) {
            let _ = tx
                .send(Err(std::io::Error::other("the client closed the stream")))
                .await;
            return;
        }
        loop {
            // A reader that gave up (the import failed or the archive ended before the data)
            // closes the stream at once: the client may be waiting for credit.
            let next = tokio::select! {
                m = incoming.message() => m,
                _ = tx.closed() => return,
            };
            match next {
                Ok(Some(a)) if kind(&a) == TYPE_DATA => {
                    let data = match tt::Data::decode(a.value.as_slice()) {
                        Ok(d) => d.data,
                        Err(e) => {
                            let _ = tx
                                .send(Err(std::io::Error::other(format!("bad Data message: {e}"))))
                                .await;
                            return;
                        }
                    };
                    let n = data.len() as i64;
                    if tx.send(Ok(data)).await.is_err() {
                        return; // the reader gave up: close the stream
                    }
                    window -= n;
                    if window < WINDOW / 2 {
                        if !update(WINDOW - window) {
                            let _ = tx
                                .send(Err(std::io::Error::other("the client closed the stream")))
                                .await;
                            return;
                        }
                        window = WINDOW;
                    }
                }
                Ok(Some(a)) => {
                    tracing::debug!(type_url = %a.type_url, "unexpected message on a data stream")
                }
                Ok(None) => return, // end of data
                Err(s) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!(
                            "the stream broke before the end of the data: {}",
                            s.message()
                        ))))
                        .await;
                    return;
                }
            }
        }
    });
    StreamReader {
        rx,
        cur: Vec::new(),
        pos: 0,
    }
}

enum Chunk {
    Data(Vec<u8>),
    End,
}

/// A blocking writer whose bytes go to the client as `Data` within the credit it grants. Call
/// [`StreamWriter::finish`] at the end: a writer dropped without it ends the client's stream
/// with an error, so an incomplete export never looks complete.
pub struct StreamWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl StreamWriter {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::replace(&mut self.buf, Vec::with_capacity(WRITE_BUF));
        self.tx.blocking_send(Chunk::Data(b)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client closed the stream",
            )
        })
    }

    /// Sends what is buffered and marks the end of the data.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.push()?;
        self.tx.blocking_send(Chunk::End).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client closed the stream",
            )
        })
    }
}

impl Write for StreamWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUF {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

/// Sends what is written to the returned writer; the task ends with the stream closed (OK after
/// [`StreamWriter::finish`], else with an error status) and says whether the client got it all.
pub fn send(stream: Stream) -> (StreamWriter, tokio::task::JoinHandle<Result<(), Status>>) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let task = tokio::spawn(async move {
        let Stream {
            mut incoming,
            outgoing,
        } = stream;
        let mut credit: i64 = 0;
        loop {
            let Some(chunk) = rx.recv().await else {
                let s = Status::aborted("the sender failed: the data is incomplete");
                let _ = outgoing.send(Err(s.clone()));
                return Err(s);
            };
            let mut data = match chunk {
                Chunk::End => return Ok(()),
                Chunk::Data(d) => d,
            };
            while !data.is_empty() {
                while credit <= 0 {
                    match incoming.message().await {
                        Ok(Some(a)) if kind(&a) == TYPE_WINDOW_UPDATE => {
                            let u = tt::WindowUpdate::decode(a.value.as_slice()).map_err(|e| {
                                Status::invalid_argument(format!("bad WindowUpdate message: {e}"))
                            })?;
                            credit += i64::from(u.update);
                        }
                        Ok(Some(a)) => {
                            tracing::debug!(type_url = %a.type_url, "unexpected message on a data stream")
                        }
                        Ok(None) | Err(_) => {
                            return Err(Status::cancelled(
                                "the client closed the stream before the end of the data",
                            ))
                        }
                    }
                }
                let n = data
                    .len()
                    .min(MAX_CHUNK)
                    .min(usize::try_from(credit).unwrap_or(MAX_CHUNK));
                let rest = data.split_off(n);
                let msg = tt::Data { data };
                if outgoing.send(Ok(any(TYPE_DATA, &msg))).is_err() {
                    return Err(Status::cancelled("the client closed the stream"));
                }
                credit -= n as i64;
                data = rest;
            }
        }
    });
    (
        StreamWriter {
            tx,
            buf: Vec::with_capacity(WRITE_BUF),
        },
        task,
    )
}
