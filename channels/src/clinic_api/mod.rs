//! Clients of the cloud clinic APIs described in `seeds/` that do more than take deliveries.
//!
//! [`latrexa_bookings`] is the Latrexa -> HIS side of the Latrexa Sync Agent: it fetches online
//! bookings (REST polling and the SignalR hub) and answers confirm, reject and heartbeat.

pub mod latrexa_bookings;
