//! Gossip mesh (gossipsub v1.1/v1.2-style pubsub): the sans-IO router, its caches, peer
//! scoring and send queues, and the thin driver that connects them to a node.
//!
//! Everything here except `driver` is sans-IO: it never opens sockets, spawns tasks or reads
//! the clock; time and randomness are passed in, so the simulator and fuzzers drive the very
//! same code.

mod cache;
mod config;
mod driver;
mod message;
mod queue;
mod router;
mod score;

pub use cache::{MessageCache, SeenCache};
pub use config::{
    GossipsubConfig, MessageIdFn, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
pub use driver::{Gossip, GossipError, Received, Subscription};
pub use message::{
    Choke, Control, GossipMessage, Graft, IDontWant, IHave, IWant, MessageId, PeerExchange, Prune,
    Rpc, RpcLimits, SignedPeerRecord, SubOpts, Topic,
};
pub use queue::{Dropped, Outbound, PeerQueue, Priority};
pub use router::{
    Action, GossipEvent, GossipMetrics, Gossipsub, MeshSnapshot, PublishError, Validation,
};
pub use score::{PeerScore, RejectReason, ScoreSnapshot, TopicScoreSnapshot};
