//! What the bulkhead's hooks are told.

use std::sync::Arc;

use seawall_core::{Event, Hook};

use crate::state::State;

/// Why a call was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No slot was free and the queue (or the partition's part of it) had no room.
    Full,
    /// The call waited `max_wait` in the queue without getting a slot.
    WaitExpired,
}

impl RejectReason {
    /// A short lowercase label, as used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::WaitExpired => "wait_expired",
        }
    }
}

/// What a rejection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// Why the call was rejected.
    pub reason: RejectReason,
    /// The partition the call belonged to, if the bulkhead is partitioned.
    pub partition: Option<&'a str>,
}

/// What a limit hook is told when an adaptive limit (or a handle) moves the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitChangedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The limit before.
    pub from: usize,
    /// The limit now.
    pub to: usize,
}

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for LimitChangedEvent<'_> {
    type Of<'a> = LimitChangedEvent<'a>;
}

/// The hooks of one layer.
#[derive(Clone, Default, Debug)]
pub(crate) struct Hooks {
    pub(crate) on_rejected: Hook<RejectedEvent<'static>>,
}

impl Hooks {
    pub(crate) fn rejected(&self, state: &State, reason: RejectReason, partition: Option<usize>) {
        let partition = partition.map(|p| &*state.partition_names[p]);
        tracing::debug!(rejected_by = %state.name, rejection = "bulkhead_full", reason = reason.as_str(), partition, "call rejected");
        self.on_rejected.call(RejectedEvent {
            name: &state.name,
            reason,
            partition,
        });
    }
}

/// Everything one layer's services share: the state, the hooks and the classifier.
pub(crate) struct Shared<C> {
    pub(crate) state: Arc<State>,
    pub(crate) hooks: Hooks,
    pub(crate) classify: Arc<C>,
}

impl<C> Clone for Shared<C> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            hooks: self.hooks.clone(),
            classify: self.classify.clone(),
        }
    }
}
