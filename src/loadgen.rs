//! Placeholder; replaced by the load client.
