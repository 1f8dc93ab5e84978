//! SPDY/3.1, as far as the kubelet's streaming protocols use it: frames ([`frame`]) and a
//! server session that accepts the client's streams ([`session`]).

mod dictionary;
pub mod frame;
pub mod session;

pub use frame::{header, Codec, Frame, Headers};
pub use session::{Session, Stream};
