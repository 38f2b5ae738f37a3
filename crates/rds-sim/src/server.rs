//! The SSH side: accept loop, authentication, one command per `exec`.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Handle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::{Engine, Reply};
use crate::faults::CommandFault;
use crate::Faults;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub commands: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// Everything connection tasks share with the handle.
pub(crate) struct Inner {
    pub engine: Engine,
    pub faults: Faults,
    pub counters: Counters,
    pub authorized_keys: Vec<PublicKey>,
    pub user: Option<String>,
    pub closed: AtomicBool,
}

impl Inner {
    fn authorizes(&self, user: &str, key: &PublicKey) -> bool {
        let user_ok = self.user.as_deref().is_none_or(|u| u == user);
        // Comments are not part of a key's identity.
        let key_ok = self
            .authorized_keys
            .iter()
            .any(|k| k.key_data() == key.key_data());
        user_ok && key_ok
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    config: Arc<russh::server::Config>,
) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "rds-sim: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        next_id += 1;
        tokio::spawn(connection(
            stream,
            next_id,
            Arc::clone(&inner),
            Arc::clone(&config),
        ));
    }
}

async fn connection(
    stream: TcpStream,
    id: u64,
    inner: Arc<Inner>,
    config: Arc<russh::server::Config>,
) {
    // Command latency is what benchmarks measure; Nagle would add to it.
    let _ = stream.set_nodelay(true);
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(dup) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let socket = Arc::new(dup);
    // Registered before the refuse check; see Faults::refuse_connections.
    inner.faults.connections.insert(id, Arc::clone(&socket));
    if inner.faults.refusing() || inner.closed.load(Ordering::SeqCst) {
        inner.faults.connections.remove(id);
        let _ = socket.shutdown(Shutdown::Both);
        return;
    }
    let handler = Conn {
        inner: Arc::clone(&inner),
        socket,
    };
    match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => {
            if let Err(e) = session.await {
                tracing::debug!(error = %e, "rds-sim: session ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "rds-sim: handshake failed"),
    }
    inner.faults.connections.remove(id);
}

struct Conn {
    inner: Arc<Inner>,
    socket: Arc<std::net::TcpStream>,
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.inner.authorizes(user, key.public_key) {
            Ok(Auth::Accept)
        } else {
            self.inner
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            Ok(Auth::reject())
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.inner
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only non-interactive exec is simulated.
        session.channel_failure(channel)?;
        Ok(())
    }

    /// No subsystems (sftp and the like) either: refused as a shell is.
    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shell_request(channel, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.inner.counters.commands.fetch_add(1, Ordering::Relaxed);
        let line = String::from_utf8_lossy(data).into_owned();
        let fault = self.inner.faults.take_command_fault();
        match fault {
            Some(CommandFault::Drop) => {
                let _ = self.socket.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(CommandFault::Hang) => {
                session.channel_success(channel)?;
                return Ok(());
            }
            _ => {}
        }
        session.channel_success(channel)?;
        // Replying from a task keeps a slow command (latency, big copies)
        // from holding up other channels of the same connection.
        let handle = session.handle();
        let inner = Arc::clone(&self.inner);
        let socket = Arc::clone(&self.socket);
        tokio::spawn(async move {
            let latency = inner.faults.latency();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let reply = match &fault {
                Some(CommandFault::Fail(message)) => Reply::failure(message),
                _ => {
                    let worker = Arc::clone(&inner);
                    tokio::task::spawn_blocking(move || {
                        worker.engine.execute(&line, &worker.faults)
                    })
                    .await
                    .unwrap_or_else(|_| Reply::failure("internal error"))
                }
            };
            if fault == Some(CommandFault::CutAfterExit) {
                send_then_cut(&handle, channel, reply, &socket).await;
            } else {
                send_reply(&handle, channel, reply).await;
            }
        });
        Ok(())
    }
}

async fn send_reply(handle: &Handle, channel: ChannelId, reply: Reply) {
    send_output(handle, channel, reply).await;
    let _ = handle.eof(channel).await;
    let _ = handle.close(channel).await;
}

/// Sends output and exit status but neither EOF nor close, then cuts the
/// connection. The pause lets the session flush what was queued, so the
/// client really sees the exit status before the connection ends.
async fn send_then_cut(
    handle: &Handle,
    channel: ChannelId,
    reply: Reply,
    socket: &std::net::TcpStream,
) {
    send_output(handle, channel, reply).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let _ = socket.shutdown(Shutdown::Both);
}

/// Stdout, stderr (extended data 1) and the exit status of a reply.
async fn send_output(handle: &Handle, channel: ChannelId, reply: Reply) {
    // Send errors only mean the client went away; nothing left to tell it.
    if !reply.stdout.is_empty() {
        let _ = handle.data(channel, reply.stdout.into_bytes()).await;
    }
    if !reply.stderr.is_empty() {
        let _ = handle
            .extended_data(channel, 1, reply.stderr.into_bytes())
            .await;
    }
    let _ = handle.exit_status_request(channel, reply.status).await;
}
