package wire

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		value, date string
		want        time.Duration
	}{
		{"absent", "", "", 0},
		{"seconds", "120", "", 2 * time.Minute},
		{"seconds with spaces", " 7 ", "", 7 * time.Second},
		{"an HTTP date from now", now.Add(90 * time.Second).Format(http.TimeFormat), "", 90 * time.Second},
		{"an HTTP date from the AS's Date", "Sat, 05 Dec 2026 13:00:30 GMT", "Sat, 05 Dec 2026 13:00:00 GMT", 30 * time.Second},
		{"a date in the past", now.Add(-time.Minute).Format(http.TimeFormat), "", 0},
		{"negative", "-5", "", 0},
		{"garbage", "soon", "", 0},
		{"absurd", "99999999999999999999", "", 0}, // does not parse as uint64
		{"huge", "9999999999", "", maxRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				h.Set("Retry-After", tt.value)
			}
			if tt.date != "" {
				h.Set("Date", tt.date)
			}
			assert.Equal(t, tt.want, retryAfter(h, now))
		})
	}
}

func TestPutTxnReportsRetryAfterOf429(t *testing.T) {
	as := startAS(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		answer(http.StatusTooManyRequests, `{"errcode":"M_LIMIT_EXCEEDED"}`)(w, r)
	})
	s := newSender(t, nil, 0, 0)
	res, err := s.PutTxn(t.Context(), as.endpoint(), 1, []byte(`{"events":[]}`))
	require.Error(t, err)
	assert.Equal(t, http.StatusTooManyRequests, res.Status)
	assert.Equal(t, 3*time.Second, res.RetryAfter)
}
