//! What a connection may cost before it has registered: a cap on unregistered connections in
//! total and per address, and a byte budget for everything read before `Register` is accepted.
//!
//! Until a peer has proved a delegated worker key it is anonymous, and anonymous peers must not be
//! able to hold memory: without these bounds each could make the coordinator buffer a 16 MiB
//! first frame until the handshake timeout (40 connections took 723 MB).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The address a limit is counted against: the IP itself, or its /64 for IPv6, since one host
/// commonly holds a whole /64 and could otherwise rotate through it.
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a new connection was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Crowded {
    /// Too many unregistered connections from this address group.
    #[error("more than {0} unregistered connections from this address")]
    PerAddress(usize),
    /// Too many unregistered connections in total.
    #[error("more than {0} unregistered connections in total")]
    Total(usize),
}

/// Counts unregistered connections.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Caps of `max_total` unregistered connections, `max_per_address` from one address group.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_address, open: Mutex::default() })
    }

    /// Admits a connection from `ip`, or says why not. The pass counts until it is dropped (at
    /// registration, or when the connection ends).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pass, Crowded> {
        let group = address_group(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_here = open.per_address.get(&group).copied().unwrap_or(0);
        if from_here >= self.max_per_address {
            return Err(Crowded::PerAddress(self.max_per_address));
        }
        if open.total >= self.max_total {
            return Err(Crowded::Total(self.max_total));
        }
        open.total += 1;
        *open.per_address.entry(group).or_default() += 1;
        Ok(Pass { admission: self.clone(), group })
    }

    /// Unregistered connections now: (total, address groups).
    pub fn open(&self) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.total, open.per_address.len())
    }
}

/// One admitted unregistered connection; dropping it frees its place.
#[derive(Debug)]
pub struct Pass {
    admission: Arc<Admission>,
    group: IpAddr,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.group);
            }
        }
    }
}

/// The error a [`Budgeted`] stream reads once its budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("more than {0} bytes before registration")]
pub struct BudgetSpent(pub u64);

impl BudgetSpent {
    /// Whether `e` is this error (as tungstenite wraps it in its own).
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<BudgetSpent>())
    }
}

/// A stream that reads at most a budget of bytes until [`Budget::lift`] is called: the WebSocket
/// upgrade and the first frame must fit in it, so an anonymous peer costs at most that much.
#[derive(Debug)]
pub struct Budgeted<S> {
    inner: S,
    budget: Budget,
}

/// The shared budget of a [`Budgeted`] stream.
#[derive(Clone, Debug)]
pub struct Budget {
    limit: u64,
    remaining: Arc<AtomicU64>,
}

const UNLIMITED: u64 = u64::MAX;

impl Budget {
    /// Lifts the limit (the peer has registered).
    pub fn lift(&self) {
        self.remaining.store(UNLIMITED, Ordering::Relaxed);
    }
}

impl<S> Budgeted<S> {
    /// `inner`, readable for `limit` bytes until the returned budget is lifted.
    pub fn new(inner: S, limit: u64) -> (Self, Budget) {
        let budget = Budget { limit, remaining: Arc::new(AtomicU64::new(limit)) };
        (Self { inner, budget: budget.clone() }, budget)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = self.budget.remaining.load(Ordering::Relaxed);
        if remaining == UNLIMITED {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if remaining == 0 {
            let spent = BudgetSpent(self.budget.limit);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, spent)));
        }
        let allowed = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.remaining());
        let mut limited = buf.take(allowed);
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let read = limited.filled().len();
        if let Poll::Ready(Ok(())) = poll {
            // SAFETY: `limited` is a view of `buf`'s unfilled part; the inner reader initialised
            // and filled its first `read` bytes.
            unsafe { buf.assume_init(read) };
            buf.advance(read);
            // Only this reader decrements, and only while not lifted; a lift in between wins.
            let _ = self.budget.remaining.compare_exchange(
                remaining,
                remaining - read as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn caps_count_per_address_group_and_in_total_and_free_on_drop() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().expect("ip");
        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let p1 = a.admit(one).expect("first");
        let _p2 = a.admit(one).expect("second");
        assert_eq!(a.admit(one).err(), Some(Crowded::PerAddress(2)));
        // Two addresses of one /64 are one group.
        let _p3 = a.admit(v6a).expect("v6");
        assert_eq!(a.admit(v6b).err(), Some(Crowded::Total(3)));
        drop(p1);
        assert_eq!(a.open(), (2, 2));
        let _p4 = a.admit(v6b).expect("room again");
        assert_eq!(a.admit(v6a).err(), Some(Crowded::PerAddress(2)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(address_group(mapped), one);
    }

    #[tokio::test]
    async fn a_budgeted_stream_refuses_bytes_past_its_budget_until_lifted() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let (mut stream, budget) = Budgeted::new(rx, 10);
        tx.write_all(&[7u8; 64]).await.expect("write");
        let mut buf = [0u8; 64];
        let mut got = 0;
        let err = loop {
            match stream.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 10);
        assert!(BudgetSpent::is(&err), "{err}");
        budget.lift();
        let n = stream.read(&mut buf).await.expect("lifted");
        assert_eq!(n, 54);
    }
}
