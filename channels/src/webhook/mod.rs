//! JSON over HTTP: the signed webhook sender and the webhook source (Buktor, PX360 and
//! OpsPort-shaped bodies).

pub mod receiver;
pub mod sender;
