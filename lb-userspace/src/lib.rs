//! `lbd`: the lb daemon.
//!
//! Requests flow one way: control API → store → desired state ([`lb_common::model`]) →
//! [`reconcile`] → data plane ([`tls`], [`proxy`]).

pub mod api;
pub mod certs;
pub mod controller;
pub mod desired;
pub mod health;
pub mod store;
pub mod tls;
pub mod metrics;
pub mod proxy;
pub mod daemon;
pub mod reconcile;
pub mod xdp;
