package redisstore

// Crash stops s as a killed process would: no release, no more renewals.
func Crash(s *Store) { s.crash() }
