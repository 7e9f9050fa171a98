//! The Azuga simulator (placeholder until its piece lands).
