package wire

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter caps what a Retry-After header can ask for, so that an
// absurd value cannot overflow a duration; callers cap it further.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads h's Retry-After (RFC 9110): delay-seconds, or an
// HTTP-date counted from h's Date (the AS's own clock, so that clock skew
// does not matter) or, without one, from now. It returns 0 when the header
// is absent, unreadable or in the past.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 64); err == nil {
		if secs > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	if date, err := http.ParseTime(h.Get("Date")); err == nil {
		now = date
	}
	return min(max(at.Sub(now), 0), maxRetryAfter)
}
