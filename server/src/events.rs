//! The timeline writer: events from the high-rate parts (DHCP, TFTP, syslog) are queued
//! here and stored in batches; followers are woken when anything new is stored.
//!
//! Owns batching and the change signal. Never blocks the caller; drops (and counts)
//! events only when its bounded queue is full. Writes on its own connection, so its
//! commits never hold the inventory's shared connection (which request handlers read
//! through) while they wait for the disk.

use crate::inventory::{self, Inventory, UnixMs, now_ms};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, watch};
use tracing::warn;

type Item = (i64, UnixMs, String, String);

/// Handle for emitting timeline events.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Item>,
    changed: Arc<watch::Sender<u64>>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Starts the writer task on the current runtime.
    pub fn start(inventory: Arc<Inventory>) -> EventSink {
        let (tx, mut rx) = mpsc::channel::<Item>(16_384);
        let (changed, _) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let notify = changed.clone();
        tokio::spawn(async move {
            // Its own connection; the shared one is the fallback if it cannot be opened.
            let mut own = match inventory.connect_own() {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %crate::error_chain(&e), "event writer shares the inventory connection");
                    None
                }
            };
            let mut batch = Vec::with_capacity(512);
            while rx.recv_many(&mut batch, 1024).await > 0 {
                let items = std::mem::take(&mut batch);
                let inv = inventory.clone();
                let conn = own.take();
                let res = tokio::task::spawn_blocking(move || match conn {
                    Some(mut c) => {
                        let r = inv
                            .reconnect_if_closed(&mut c)
                            .and_then(|()| inventory::store_events(&mut c, &items));
                        if let Err(e) = &r {
                            let _ = inv.recover(&mut c, e);
                        }
                        (Some(c), r)
                    }
                    None => (None, inv.record_events(&items)),
                })
                .await;
                match res {
                    Ok((c, r)) => {
                        own = c;
                        if let Err(e) = r {
                            warn!(error = %crate::error_chain(&e), "timeline events not stored")
                        }
                    }
                    Err(e) => warn!(error = %crate::error_chain(&e), "timeline writer failed"),
                }
                notify.send_modify(|g| *g += 1);
            }
        });
        EventSink {
            tx,
            changed,
            dropped: Arc::default(),
        }
    }

    /// Queues an event for a node's timeline.
    pub fn emit(&self, node_id: i64, kind: &str, message: impl Into<String>) {
        if self
            .tx
            .try_send((node_id, now_ms(), kind.to_string(), message.into()))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wakes followers after an event was stored directly through the inventory.
    pub fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever new events are stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
