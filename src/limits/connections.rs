//! Sockets per node, per tenant and per user, counted on this node. Counting cluster-wide
//! would cost a Redis round trip per handshake (and per-tenant sums over every user), so
//! every connection limit is per node; it is documented as such.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::LimitError;
use crate::auth::Identity;
use crate::config::LimitsConfig;
use crate::rooms::{Id, Tenant};

#[derive(Default)]
struct Counts {
    node: u64,
    tenants: HashMap<Tenant, u64>,
    users: HashMap<(Tenant, Id), u64>,
}

pub struct Connections {
    max_node: u64,
    max_tenant: u64,
    max_user: u64,
    counts: Mutex<Counts>,
}

/// One counted socket; uncounted once, by [`Slot::release`] or when dropped (a socket that
/// never reached its disconnect handler still gives its place back).
pub struct Slot {
    connections: Arc<Connections>,
    /// Whose socket it is (shared with the socket's own identity: no copies per socket).
    who: Arc<Identity>,
    released: std::sync::atomic::AtomicBool,
}

impl Connections {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            max_node: config.max_connections,
            max_tenant: config.max_connections_per_tenant,
            max_user: config.max_connections_per_user,
            counts: Mutex::default(),
        }
    }

    /// Counts a new socket of `who`, or refuses it when a limit is reached (0 is no limit).
    pub fn admit(self: &Arc<Self>, who: &Arc<Identity>) -> Result<Slot, LimitError> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let tenant = c.tenants.get(&who.tenant).copied().unwrap_or(0);
        let user_key = (who.tenant.clone(), who.user_id.clone());
        let user = c.users.get(&user_key).copied().unwrap_or(0);
        for (which, count, limit) in [
            ("node", c.node, self.max_node),
            ("tenant", tenant, self.max_tenant),
            ("user", user, self.max_user),
        ] {
            if limit > 0 && count >= limit {
                return Err(LimitError::TooManyConnections { which, limit });
            }
        }
        c.node += 1;
        *c.tenants.entry(who.tenant.clone()).or_default() += 1;
        *c.users.entry(user_key).or_default() += 1;
        Ok(Slot {
            connections: self.clone(),
            who: who.clone(),
            released: Default::default(),
        })
    }

    fn release(&self, tenant: &Tenant, user: &Id) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.node = c.node.saturating_sub(1);
        if let Some(n) = c.tenants.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                c.tenants.remove(tenant);
            }
        }
        let key = (tenant.clone(), user.clone());
        if let Some(n) = c.users.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.users.remove(&key);
            }
        }
    }

    /// Sockets counted on this node.
    pub fn count(&self) -> u64 {
        self.counts.lock().map_or(0, |c| c.node)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("tenant", &self.who.tenant)
            .field("user", &self.who.user_id)
            .finish_non_exhaustive()
    }
}

impl Slot {
    pub fn release(&self) {
        if !self
            .released
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.connections
                .release(&self.who.tenant, &self.who.user_id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::Grant;

    fn who(user: &str, tenant: &str) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: Id::parse(user).unwrap(),
            tenant: Id::parse(tenant).unwrap(),
            projects: Grant::None,
            agents: Grant::None,
            role: None,
            publish: None,
            expires_at: 0,
        })
    }

    #[test]
    fn each_limit_refuses_at_its_boundary_and_frees_on_release() {
        let config = LimitsConfig {
            max_connections: 5,
            max_connections_per_tenant: 3,
            max_connections_per_user: 2,
            ..LimitsConfig::default()
        };
        let c = Arc::new(Connections::new(&config));
        let a1 = c.admit(&who("a", "t")).unwrap();
        let _a2 = c.admit(&who("a", "t")).unwrap();
        let user = c.admit(&who("a", "t")).unwrap_err();
        assert_eq!(
            user,
            LimitError::TooManyConnections {
                which: "user",
                limit: 2
            }
        );
        let _b = c.admit(&who("b", "t")).unwrap();
        let tenant = c.admit(&who("c", "t")).unwrap_err();
        assert_eq!(tenant.code(), "too_many_connections");
        let _x = c.admit(&who("x", "u")).unwrap();
        let _y = c.admit(&who("y", "u")).unwrap();
        assert!(matches!(
            c.admit(&who("z", "v")),
            Err(LimitError::TooManyConnections { which: "node", .. })
        ));
        a1.release();
        a1.release();
        drop(a1);
        assert_eq!(c.count(), 4);
        let _a3 = c.admit(&who("a", "t")).unwrap();
    }
}
