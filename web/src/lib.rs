//! streamr-web: the node's local HTTP surface (warp): the dashboard (embedded assets), its JSON API and
//! live events, HTTP-FLV playback, Prometheus metrics, and the rules that keep other sites and other
//! machines out (Host, CSRF, password).

mod api;
mod assets;
pub mod events;
#[cfg(test)]
mod fake;
pub mod flv;
mod qr;
pub mod security;
mod server;

pub use api::{
    ApiError, ApiFuture, AssignmentStatus, CoordinatorStatus, EarningsStatus, FriendStatus, Invite,
    InviteRequest, JoinRequest, Joined, LastCrash, MeshStream, NatStatus, NetworkStream, NodeApi,
    Overview, PeerStatus, ReceiptStatus, SessionStatus, SettingView, Settings, Status,
    StreamStatus, TrustStatus, UpdateNotice, VersionStatus,
};
pub use security::{hash_password, is_password_hash, verify_password};
pub use server::{BindError, WebConfig, WebServer};

/// Every embedded dashboard file with its bytes, unpacked (the files are stored gzipped).
pub fn embedded_assets() -> Vec<(&'static str, Vec<u8>)> {
    assets::all()
        .into_iter()
        .map(|(name, bytes, _)| (name, bytes))
        .collect()
}
