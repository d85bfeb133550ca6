//! One TCP connection: protocol header, handshake, then frames to channels.
//!
//! One task owns the socket and every channel of the connection, without
//! locks. Its loop waits on three things: bytes from the client, answers from
//! RocketMQ for publishes in flight, and the heartbeat clock. It reads the
//! socket only while the publish pipeline has room (backpressure), and tells
//! clients that support it when it stopped reading for long
//! (connection.blocked). Output is gathered in one buffer and written once
//! per loop turn, not once per frame.

pub mod handshake;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{channel as channel_method, connection, AMQPClass};
use bytes::BytesMut;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

use crate::channel::{self, Channel, Pipeline, PublishDone, Session};
use crate::codec::{Frame, FrameDecoder, FrameEncoder, PROTOCOL_HEADER};
use crate::delivery::{ConnectionSink, FeedCommand, ToConnection};
use crate::error::{ConnectionException, HardCode, ProtocolError};
use crate::logging::{Throttle, LOG_INTERVAL};
use crate::topology::{Permission, Vhost};
use crate::Gateway;
use handshake::{ClientCapabilities, Tuning};

/// RabbitMQ's default: the whole handshake must finish within 10 s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deliveries are taken from feeds only while less than this is waiting
/// for the socket: a client that stops reading stops its feeds.
const OUT_LIMIT: usize = 1 << 20;
/// How long the last bytes may take to leave once the connection is done.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    /// We sent connection.close and wait for close-ok.
    Closing,
    Closed,
}

/// The vhost a connection opened, with the user's permission on it.
struct Opened {
    vhost: Arc<Vhost>,
    permission: Permission,
}

pub struct Connection {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    /// Unique across gateways: owns exclusive queues.
    name: String,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    read_buf: BytesMut,
    out: FrameEncoder,
    decoder: FrameDecoder,
    state: State,
    tuning: Tuning,
    client: ClientCapabilities,
    user: String,
    opened: Option<Opened>,
    channels: HashMap<u16, Channel>,
    /// Channels we closed, waiting for the client's close-ok.
    closing_channels: HashSet<u16>,
    next_epoch: u64,
    pipeline: Pipeline,
    /// Deliveries from the feeds of the queues this connection consumes.
    sink: ConnectionSink,
    deliveries: mpsc::UnboundedReceiver<ToConnection>,
    /// Body bytes handed to this connection by feeds and not yet written.
    in_transit: Arc<AtomicUsize>,
    /// Channels closed since the last turn, whose consumers and unacked
    /// messages are still to be released.
    released: Vec<Channel>,
    /// Since when the pipeline has been full.
    full_since: Option<Instant>,
    blocked: bool,
    /// The client closed the connection: close-ok goes out once its
    /// channels are released and its exclusive queues deleted, so a
    /// connection opened right after sees them gone (as with RabbitMQ).
    close_ok_owed: bool,
    last_read: Instant,
    last_write: Instant,
    /// Since when output has waited without the socket taking any of it.
    write_stalled_since: Option<Instant>,
    /// Accepted beyond max_connections: refused at connection.open, so the
    /// client reads a reason instead of waiting in the accept queue.
    over_limit: bool,
    deadline: Option<Instant>,
    /// Turns true when the gateway shuts down (`Gateway::stopping`).
    stopping: watch::Receiver<bool>,
}

impl Connection {
    pub fn new(gateway: Arc<Gateway>, socket: TcpStream, peer: SocketAddr, id: u64) -> Connection {
        let _ = socket.set_nodelay(true);
        let (reader, writer) = socket.into_split();
        let config = &gateway.config;
        let tuning = Tuning {
            channel_max: config.channel_max,
            frame_max: config.frame_max as usize,
            heartbeat: 0,
        };
        let now = Instant::now();
        let (sink, deliveries) = mpsc::unbounded_channel();
        Connection {
            stopping: gateway.stopping.subscribe(),
            sink,
            deliveries,
            in_transit: Arc::default(),
            released: Vec::new(),
            name: format!("{}/{id}", gateway.instance_id),
            decoder: FrameDecoder {
                frame_max: config.frame_max as usize,
            },
            peer,
            reader,
            writer,
            read_buf: BytesMut::with_capacity(64 * 1024),
            out: FrameEncoder::default(),
            state: State::AwaitStartOk,
            tuning,
            client: ClientCapabilities::default(),
            user: String::new(),
            opened: None,
            channels: HashMap::new(),
            closing_channels: HashSet::new(),
            next_epoch: 0,
            pipeline: Pipeline::new(),
            full_since: None,
            blocked: false,
            close_ok_owed: false,
            last_read: now,
            last_write: now,
            write_stalled_since: None,
            over_limit: false,
            deadline: Some(now + HANDSHAKE_TIMEOUT),
            gateway,
        }
    }

    /// Marks a connection accepted beyond max_connections (see `over_limit`).
    pub fn over_limit(mut self) -> Connection {
        self.over_limit = true;
        self
    }

    /// Serves the connection until it ends; never panics on client input.
    pub async fn run(mut self) {
        match self.serve().await {
            Ok(()) => tracing::debug!("Connection closed."),
            Err(e) => tracing::debug!(error = %e, "Connection ended by I/O error."),
        }
        self.finish().await;
    }

    async fn serve(&mut self) -> std::io::Result<()> {
        if !self.read_protocol_header().await? {
            return Ok(());
        }
        self.out.method(0, handshake::start());
        while self.state != State::Closed {
            self.stop_if_told();
            self.write_what_fits()?;
            self.turn().await?;
        }
        Ok(())
    }

    /// Reads the 8-byte header; a wrong one is answered with ours, then closed.
    async fn read_protocol_header(&mut self) -> std::io::Result<bool> {
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            while self.read_buf.len() < PROTOCOL_HEADER.len() {
                if self.reader.read_buf(&mut self.read_buf).await? == 0 {
                    return Ok(false);
                }
            }
            Ok::<_, std::io::Error>(true)
        })
        .await;
        let complete = matches!(read, Ok(Ok(true)));
        if complete && &self.read_buf[..PROTOCOL_HEADER.len()] == PROTOCOL_HEADER {
            let _ = self.read_buf.split_to(PROTOCOL_HEADER.len());
            return Ok(true);
        }
        if complete {
            tracing::info!("Unsupported protocol header; answered with AMQP 0-9-1's and closed.");
            self.writer.write_all(PROTOCOL_HEADER).await?;
        }
        let _ = self.writer.shutdown().await;
        Ok(false)
    }

    /// One turn of the loop: whichever of socket, pipeline or clock is ready.
    async fn turn(&mut self) -> std::io::Result<()> {
        let max_in_flight = self.gateway.config.max_in_flight;
        let room = self.pipeline.len() < max_in_flight;
        self.track_backpressure(room);
        let heartbeat = self.next_heartbeat_check();
        let blocked_at = self
            .full_since
            .map(|t| t + Duration::from_millis(self.gateway.config.blocked_after_ms));
        let writing = !self.out.is_empty();
        let taking_deliveries = self.out.len() < OUT_LIMIT;
        tokio::select! {
            // The socket had no room at the end of the last turn.
            written = self.writer.write(self.out.pending()), if writing => {
                self.wrote(written?)?;
            }
            Some(done) = self.pipeline.next(), if !self.pipeline.is_empty() => {
                self.publish_done(done);
                while let Some(Some(done)) = self.pipeline.next().now_or_never() {
                    self.publish_done(done);
                }
                self.send_acks();
            }
            read = self.reader.read_buf(&mut self.read_buf), if room && self.reading() => {
                if read? == 0 {
                    self.state = State::Closed;
                    return Ok(());
                }
                self.last_read = Instant::now();
                self.process_frames().await;
                self.send_acks();
            }
            Some(first) = self.deliveries.recv(), if taking_deliveries => self.on_deliveries(first),
            Ok(()) = self.stopping.changed() => {}
            _ = sleep_until(heartbeat) => self.on_clock(),
            _ = sleep_until(blocked_at.unwrap_or_else(far_future)), if blocked_at.is_some() && !self.blocked => {
                self.block();
            }
        }
        self.release_channels().await;
        Ok(())
    }

    /// Whether to read the socket: not once closed, and not while shutting
    /// down until connection.close is sent (no new publishes; the close-ok
    /// is read after).
    fn reading(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::Closing => true,
            _ => !*self.stopping.borrow(),
        }
    }

    /// The gateway is shutting down: once every publish in flight is
    /// settled and its confirm written, close with 320 as RabbitMQ does.
    /// Unacked messages are requeued and exclusive queues deleted as for
    /// any close (`finish`).
    fn stop_if_told(&mut self) {
        if matches!(self.state, State::Closing | State::Closed)
            || !*self.stopping.borrow()
            || !self.pipeline.is_empty()
        {
            return;
        }
        self.send_acks();
        self.raise(
            ConnectionException::new(
                HardCode::ConnectionForced,
                "broker forced connection closure with reason 'shutdown'",
            )
            .into(),
        );
    }

    /// Writes what the feeds sent, a batch per turn (one write for all).
    fn on_deliveries(&mut self, first: ToConnection) {
        let mut wake: Vec<Arc<crate::delivery::Feed>> = Vec::new();
        let was_full =
            self.in_transit.load(Ordering::Acquire) >= crate::delivery::credit::MAX_IN_TRANSIT;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                ToConnection::Deliver(d) => {
                    let ch = self
                        .channels
                        .get_mut(&d.channel)
                        .filter(|ch| ch.epoch == d.epoch);
                    let written_no_ack =
                        channel::consume::deliver(ch, &mut self.out, self.tuning.frame_max, d);
                    if let Some(feed) = written_no_ack {
                        if !wake.iter().any(|f| Arc::ptr_eq(f, &feed)) {
                            wake.push(feed);
                        }
                    }
                }
                ToConnection::Cancelled {
                    channel,
                    epoch,
                    consumer_tag,
                } => {
                    if let Some(ch) = self
                        .channels
                        .get_mut(&channel)
                        .filter(|ch| ch.epoch == epoch)
                    {
                        channel::consume::cancelled(
                            ch,
                            &mut self.out,
                            self.client.consumer_cancel_notify,
                            consumer_tag,
                        );
                    }
                }
            }
            if self.out.len() < OUT_LIMIT {
                next = self.deliveries.try_recv().ok();
            }
        }
        // Feeds held back by this connection's full buffer may go on.
        if was_full {
            for ch in self.channels.values() {
                for c in ch.consuming.consumers.values() {
                    if !wake.iter().any(|f| Arc::ptr_eq(f, &c.feed)) {
                        wake.push(c.feed.clone());
                    }
                }
            }
        }
        // No-ack consumers got their credit back by being written.
        for feed in wake {
            feed.send(FeedCommand::Wake);
        }
    }

    /// Requeues the unacked messages of closed channels and removes their consumers.
    async fn release_channels(&mut self) {
        if self.released.is_empty() {
            return;
        }
        let Some(opened) = self.opened.as_ref() else {
            self.released.clear();
            return;
        };
        let (gateway, vhost) = (self.gateway.clone(), opened.vhost.clone());
        for mut ch in std::mem::take(&mut self.released) {
            channel::consume::release(&gateway, &vhost, &mut ch).await;
        }
    }

    fn track_backpressure(&mut self, room: bool) {
        if room {
            self.full_since = None;
            if self.blocked && self.pipeline.len() <= self.gateway.config.max_in_flight / 2 {
                self.blocked = false;
                tracing::info!("Publishing resumed; connection unblocked.");
                if self.client.connection_blocked {
                    self.out.method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                            connection::Unblocked {},
                        )),
                    );
                }
            }
        } else if self.full_since.is_none() {
            self.full_since = Some(Instant::now());
        }
    }

    fn block(&mut self) {
        self.blocked = true;
        metrics::counter!(crate::metrics::BLOCKED).increment(1);
        tracing::warn!(
            in_flight = self.pipeline.len(),
            "RocketMQ is slow; stopped reading and blocked the connection."
        );
        if self.client.connection_blocked && self.state == State::Open {
            let reason = format!(
                "RocketMQ is slow: {} publishes waiting to be stored",
                self.pipeline.len()
            );
            self.out.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: reason.into(),
                })),
            );
        }
    }

    /// When the clock next needs looking at: handshake/close deadline,
    /// heartbeat, or a write that made no progress.
    fn next_heartbeat_check(&self) -> Instant {
        let beat = match self.tuning.heartbeat {
            0 => far_future(),
            hb => {
                let hb = Duration::from_secs(u64::from(hb));
                (self.last_write + hb / 2).min(self.last_read + hb * 2)
            }
        };
        let stall = self
            .write_stalled_since
            .map_or_else(far_future, |t| t + self.write_timeout());
        self.deadline.map_or(beat, |d| d.min(beat)).min(stall)
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway.config.client_write_timeout_ms)
    }

    /// Writes as much output as the socket takes now, without waiting.
    fn write_what_fits(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.writer.try_write(self.out.pending()) {
                Ok(n) => self.wrote(n)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !self.out.is_empty() && self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The socket took `n` bytes of output.
    fn wrote(&mut self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.out.advance(n);
        let now = Instant::now();
        self.last_write = now;
        self.write_stalled_since = (!self.out.is_empty()).then_some(now);
        Ok(())
    }

    fn on_clock(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            tracing::info!(state = ?self.state, "Connection timed out in handshake or close.");
            self.state = State::Closed;
            return;
        }
        if self
            .write_stalled_since
            .is_some_and(|t| now.duration_since(t) >= self.write_timeout())
        {
            tracing::warn!(
                waiting_bytes = self.out.len(),
                timeout_ms = self.gateway.config.client_write_timeout_ms,
                "Client stopped reading; closing the connection (its unacked messages are requeued)."
            );
            self.out.clear();
            self.state = State::Closed;
            return;
        }
        let hb = u64::from(self.tuning.heartbeat);
        if hb == 0 {
            return;
        }
        if now.duration_since(self.last_read) >= Duration::from_secs(hb * 2) {
            tracing::warn!(heartbeat = hb, "Missed heartbeats from client; closing.");
            self.state = State::Closed;
            return;
        }
        if now.duration_since(self.last_write) >= Duration::from_secs(hb) / 2 {
            self.out.heartbeat();
            self.last_write = now;
        }
    }

    /// Writes what is left when the connection ends, for a short while.
    async fn flush(&mut self) {
        let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, async {
            while !self.out.is_empty() {
                match self.writer.write(self.out.pending()).await {
                    Ok(n) if n > 0 => self.out.advance(n),
                    _ => break,
                }
            }
        })
        .await;
        self.out.clear();
    }

    async fn process_frames(&mut self) {
        loop {
            let frame = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    self.raise(e.into());
                    // The stream cannot be resynchronised after a framing error.
                    self.read_buf.clear();
                    return;
                }
            };
            if let Err(e) = self.handle_frame(frame).await {
                self.raise(e);
            }
            if self.state == State::Closed {
                return;
            }
        }
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match self.state {
            State::Closing => return self.while_closing(frame),
            State::Closed => return Ok(()),
            State::AwaitStartOk | State::AwaitTuneOk | State::AwaitOpen => {
                return self.handshake(frame)
            }
            State::Open => {}
        }
        match frame {
            Frame::Heartbeat(0) => Ok(()),
            Frame::Heartbeat(ch) => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                format!("heartbeat frame on channel {ch}"),
            )
            .into()),
            Frame::Method(0, AMQPClass::Connection(m)) => self.connection_method(m),
            Frame::Method(0, _) | Frame::Header(0, _) | Frame::Body(0, _) => {
                Err(ConnectionException::new(
                    HardCode::CommandInvalid,
                    "only connection methods may use channel 0",
                )
                .into())
            }
            Frame::Method(_, AMQPClass::Connection(_)) => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                "connection method on a non-zero channel",
            )
            .into()),
            Frame::Method(id, method) => self.channel_method(id, method).await,
            Frame::Header(id, header) => {
                self.with_channel(id, |ch, s| channel::handle_header(ch, s, header))
            }
            Frame::Body(id, body) => {
                self.with_channel(id, |ch, s| channel::handle_body(ch, s, body))
            }
        }
    }

    fn handshake(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let method = match frame {
            Frame::Method(0, AMQPClass::Connection(m)) => m,
            Frame::Heartbeat(0) => return Ok(()),
            _ => {
                return Err(ConnectionException::new(
                    HardCode::UnexpectedFrame,
                    "expected a connection method during the handshake",
                )
                .into());
            }
        };
        match (self.state, method) {
            (State::AwaitStartOk, connection::AMQPMethod::StartOk(m)) => {
                let (user, client) = handshake::authenticate(&self.gateway, self.peer, &m).inspect_err(|e| {
                    tracing::warn!(reason = %e.text, mechanism = %m.mechanism, "Login refused.");
                })?;
                self.user = user;
                self.client = client;
                self.out.method(0, handshake::tune(&self.gateway.config));
                self.state = State::AwaitTuneOk;
                Ok(())
            }
            (State::AwaitTuneOk, connection::AMQPMethod::TuneOk(m)) => {
                self.tuning = handshake::accept_tune_ok(&self.gateway.config, &m)?;
                self.decoder.frame_max = self.tuning.frame_max;
                self.state = State::AwaitOpen;
                Ok(())
            }
            (State::AwaitOpen, connection::AMQPMethod::Open(_)) if self.over_limit => {
                Err(ConnectionException::new(
                    HardCode::NotAllowed,
                    format!(
                        "this gateway serves at most {} connections (max_connections); try again later or another gateway",
                        self.gateway.config.max_connections
                    ),
                )
                .on_method(10, 40)
                .into())
            }
            (State::AwaitOpen, connection::AMQPMethod::Open(m)) => {
                let (vhost, permission) = handshake::open(&self.gateway, &self.user, &m)?;
                tracing::info!(user = %self.user, vhost = %vhost.name, "Connection opened.");
                self.opened = Some(Opened { vhost, permission });
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                );
                self.state = State::Open;
                self.deadline = None;
                Ok(())
            }
            (_, connection::AMQPMethod::Close(_)) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.state = State::Closed;
                Ok(())
            }
            (state, m) => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                format!(
                    "connection.{} is not expected in state {state:?}",
                    method_name(&m)
                ),
            )
            .into()),
        }
    }

    fn connection_method(&mut self, m: connection::AMQPMethod) -> Result<(), ProtocolError> {
        match m {
            connection::AMQPMethod::Close(c) => {
                tracing::debug!(code = c.reply_code, text = %c.reply_text, "Client closed the connection.");
                self.close_ok_owed = true;
                self.state = State::Closed;
                Ok(())
            }
            connection::AMQPMethod::CloseOk(_) => {
                self.state = State::Closed;
                Ok(())
            }
            // Clients may tell us they are blocked; nothing to do.
            connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_) => Ok(()),
            connection::AMQPMethod::UpdateSecret(_) => Err(ConnectionException::new(
                HardCode::NotImplemented,
                "connection.update-secret is not supported (no token authentication)",
            )
            .on_method(10, 70)
            .into()),
            other => Err(ConnectionException::new(
                HardCode::CommandInvalid,
                format!(
                    "connection.{} is not expected on an open connection",
                    method_name(&other)
                ),
            )
            .into()),
        }
    }

    async fn channel_method(&mut self, id: u16, method: AMQPClass) -> Result<(), ProtocolError> {
        if self.closing_channels.contains(&id) {
            // After we sent channel.close, only close / close-ok matter.
            match method {
                AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(_)) => {
                    self.closing_channels.remove(&id);
                }
                AMQPClass::Channel(channel_method::AMQPMethod::Close(_)) => {
                    self.closing_channels.remove(&id);
                    self.out.method(
                        id,
                        AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(
                            channel_method::CloseOk {},
                        )),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        match method {
            AMQPClass::Channel(channel_method::AMQPMethod::Open(_))
                if !self.channels.contains_key(&id) =>
            {
                self.open_channel(id)
            }
            AMQPClass::Channel(channel_method::AMQPMethod::Close(c))
                if self.channels.contains_key(&id) =>
            {
                tracing::debug!(
                    channel = id,
                    code = c.reply_code,
                    "Client closed a channel."
                );
                if let Some(ch) = self.channels.remove(&id) {
                    self.released.push(ch);
                }
                self.out.method(
                    id,
                    AMQPClass::Channel(channel_method::AMQPMethod::CloseOk(
                        channel_method::CloseOk {},
                    )),
                );
                Ok(())
            }
            method => {
                if reads_queue_state(&method) {
                    self.settle_pipeline().await;
                }
                if let Some(opened) = self.opened.as_ref() {
                    if channel::names_unknown(&opened.vhost, &method) {
                        crate::follow::catch_up_now(&self.gateway).await;
                    }
                }
                let (Some(opened), Some(ch)) = (self.opened.as_ref(), self.channels.get_mut(&id))
                else {
                    return Err(ConnectionException::new(
                        HardCode::ChannelError,
                        format!("expected 'channel.open' on channel {id}"),
                    )
                    .into());
                };
                let mut session = Session {
                    gateway: &self.gateway,
                    vhost: &opened.vhost,
                    user: &self.user,
                    permission: &opened.permission,
                    connection_name: &self.name,
                    out: &mut self.out,
                    frame_max: self.tuning.frame_max,
                    pipeline: &mut self.pipeline,
                    sink: &self.sink,
                    in_transit: &self.in_transit,
                };
                channel::handle_method(ch, &mut session, method).await
            }
        }
    }

    fn open_channel(&mut self, id: u16) -> Result<(), ProtocolError> {
        if id > self.tuning.channel_max {
            return Err(ConnectionException::new(
                HardCode::ChannelError,
                format!(
                    "channel {id} is above the negotiated channel_max {}",
                    self.tuning.channel_max
                ),
            )
            .on_method(20, 10)
            .into());
        }
        self.next_epoch += 1;
        self.channels.insert(id, Channel::new(id, self.next_epoch));
        self.out.method(
            id,
            AMQPClass::Channel(channel_method::AMQPMethod::OpenOk(
                channel_method::OpenOk {},
            )),
        );
        Ok(())
    }

    /// Content frames go to their channel; a channel that is not open is 504.
    fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &mut Session<'_>) -> Result<(), ProtocolError>,
    ) -> Result<(), ProtocolError> {
        if self.closing_channels.contains(&id) {
            return Ok(());
        }
        let (Some(opened), Some(ch)) = (self.opened.as_ref(), self.channels.get_mut(&id)) else {
            return Err(ConnectionException::new(
                HardCode::ChannelError,
                format!("content on channel {id}, which is not open"),
            )
            .into());
        };
        let mut session = Session {
            gateway: &self.gateway,
            vhost: &opened.vhost,
            user: &self.user,
            permission: &opened.permission,
            connection_name: &self.name,
            out: &mut self.out,
            frame_max: self.tuning.frame_max,
            pipeline: &mut self.pipeline,
            sink: &self.sink,
            in_transit: &self.in_transit,
        };
        f(ch, &mut session)
    }

    /// Turns an exception into channel.close or connection.close, in one place.
    fn raise(&mut self, error: ProtocolError) {
        match error {
            ProtocolError::Channel(id, e) => {
                tracing::info!(channel = id, code = e.code.id(), text = %e.text, "Channel error; closing the channel.");
                if let Some(ch) = self.channels.remove(&id) {
                    self.released.push(ch);
                }
                self.closing_channels.insert(id);
                self.out.method(
                    id,
                    AMQPClass::Channel(channel_method::AMQPMethod::Close(channel_method::Close {
                        reply_code: e.code.id(),
                        reply_text: e.reply_text().into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
            }
            ProtocolError::Connection(e) => {
                if self.state == State::Closing {
                    return;
                }
                tracing::info!(code = e.code.id(), text = %e.text, "Connection error; closing the connection.");
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                        reply_code: e.code.id(),
                        reply_text: e.reply_text().into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
                self.state = State::Closing;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
        }
    }

    fn while_closing(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                self.state = State::Closed
            }
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.state = State::Closed;
            }
            _ => {}
        }
        Ok(())
    }

    /// RocketMQ answered one publish.
    fn publish_done(&mut self, done: PublishDone) {
        let stored = done.result.is_ok();
        if let Err(error) = &done.result {
            metrics::counter!(crate::metrics::SEND_FAILED).increment(1);
            // Once per interval, not once per message: a RocketMQ restart
            // fails every publish in flight.
            static NACKED: Throttle = Throttle::new(LOG_INTERVAL);
            static LOST: Throttle = Throttle::new(LOG_INTERVAL);
            if done.tag.is_some() {
                if let Some(more) = NACKED.admit() {
                    tracing::warn!(channel = done.channel, %error, more_since_last_line = more, "RocketMQ did not store a message; nacked.");
                }
            } else if let Some(more) = LOST.admit() {
                tracing::error!(channel = done.channel, %error, more_since_last_line = more, "RocketMQ did not store a message and its channel is not in confirm mode: the publisher cannot know.");
            }
        } else {
            metrics::counter!(crate::metrics::CONFIRMED).increment(1);
        }
        let Some(ch) = self
            .channels
            .get_mut(&done.channel)
            .filter(|ch| ch.epoch == done.epoch)
        else {
            return;
        };
        if let (Some(tag), Some(confirms)) = (done.tag, ch.confirms.as_mut()) {
            if let Some(nack) = confirms.settle(tag, stored) {
                self.out.method(ch.id, nack);
            }
        }
    }

    /// Waits until every publish of this connection is stored (or failed):
    /// RabbitMQ handles a channel's methods in order, so a basic.get or a
    /// message count after a publish sees that message.
    async fn settle_pipeline(&mut self) {
        while let Some(done) = self.pipeline.next().await {
            self.publish_done(done);
        }
        self.send_acks();
    }

    fn send_acks(&mut self) {
        for ch in self.channels.values_mut() {
            if let Some(ack) = ch.confirms.as_mut().and_then(|c| c.take_ack()) {
                self.out.method(ch.id, ack);
            }
        }
    }

    /// After the socket is done: let sends already handed to RocketMQ finish,
    /// flush what is left, and delete the exclusive queues this connection owned.
    async fn finish(&mut self) {
        let drain = self.gateway.config.send_timeout_ms + 1000;
        let _ = tokio::time::timeout(Duration::from_millis(drain), async {
            while let Some(done) = self.pipeline.next().await {
                self.publish_done(done);
            }
        })
        .await;
        self.send_acks();
        // Deliveries that were on their way are handed back (a feed sending
        // after this finds the connection gone and keeps the message).
        self.deliveries.close();
        while let Ok(item) = self.deliveries.try_recv() {
            if let ToConnection::Deliver(d) = item {
                channel::consume::deliver(None, &mut self.out, self.tuning.frame_max, d);
            }
        }
        // Every channel goes: its unacked messages are requeued.
        self.released
            .extend(self.channels.drain().map(|(_, ch)| ch));
        self.release_channels().await;
        if let Some(opened) = self.opened.take() {
            self.delete_exclusive_queues(&opened).await;
        }
        if self.close_ok_owed {
            self.out.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            );
        }
        self.flush().await;
        let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, self.writer.shutdown()).await;
    }

    async fn delete_exclusive_queues(&mut self, opened: &Opened) {
        let owned: Vec<meta::Queue> = opened
            .vhost
            .read()
            .queues
            .values()
            .filter(|q| q.record.exclusive_owner.as_deref() == Some(self.name.as_str()))
            .map(|q| q.record.clone())
            .collect();
        if owned.is_empty() {
            return;
        }
        let _changes = opened.vhost.changes.lock().await;
        for queue in owned {
            if let Err(error) =
                crate::registry::queues::delete(&self.gateway, &opened.vhost, &queue).await
            {
                tracing::error!(queue = %queue.name, %error, "Exclusive queue of a closed connection could not be deleted.");
            }
        }
    }
}

/// Methods whose answer depends on what earlier publishes stored.
fn reads_queue_state(method: &AMQPClass) -> bool {
    use amq_protocol::protocol::{basic, queue};
    matches!(
        method,
        AMQPClass::Basic(basic::AMQPMethod::Get(_) | basic::AMQPMethod::Consume(_))
            | AMQPClass::Queue(
                queue::AMQPMethod::Declare(_)
                    | queue::AMQPMethod::Purge(_)
                    | queue::AMQPMethod::Delete(_)
            )
    )
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn method_name(m: &connection::AMQPMethod) -> &'static str {
    match m {
        connection::AMQPMethod::Start(_) => "start",
        connection::AMQPMethod::StartOk(_) => "start-ok",
        connection::AMQPMethod::Secure(_) => "secure",
        connection::AMQPMethod::SecureOk(_) => "secure-ok",
        connection::AMQPMethod::Tune(_) => "tune",
        connection::AMQPMethod::TuneOk(_) => "tune-ok",
        connection::AMQPMethod::Open(_) => "open",
        connection::AMQPMethod::OpenOk(_) => "open-ok",
        connection::AMQPMethod::Close(_) => "close",
        connection::AMQPMethod::CloseOk(_) => "close-ok",
        connection::AMQPMethod::Blocked(_) => "blocked",
        connection::AMQPMethod::Unblocked(_) => "unblocked",
        connection::AMQPMethod::UpdateSecret(_) => "update-secret",
        connection::AMQPMethod::UpdateSecretOk(_) => "update-secret-ok",
    }
}
