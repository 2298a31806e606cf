package wire

import (
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrTimeout is matched (errors.Is) by the error PutTxn and Ping return when
// the connect timeout or the answer timeout of the Sender expired, or a
// timeout of the HTTP client's own (http.Client.Timeout, a Transport's or
// Dialer's); the error is then also a *TimeoutError that says which. It
// never matches context.Canceled or context.DeadlineExceeded: those mean
// the caller's context ended, not that the AS was too slow.
var ErrTimeout = errors.New("wire: timeout")

// ErrInvalidEndpoint is matched by the error PutTxn and Ping return, without
// sending anything, for an Endpoint whose URL cannot be used: not absolute
// http or https, or with credentials, a query or a fragment. The error does
// not repeat the URL.
var ErrInvalidEndpoint = errors.New("wire: invalid endpoint URL")

// TimeoutError is the error (wrapped) of a request that ran out of time. It
// matches ErrTimeout.
type TimeoutError struct {
	// Connect is true when the connect timeout expired (no connection was
	// obtained in time), false when the answer timeout did (the AS did not
	// finish answering in time).
	Connect bool
	// After is the Sender's timeout that expired; 0 when a timeout of the
	// caller's HTTP client expired first.
	After time.Duration
}

// Error says which timeout expired, and after how long.
func (e *TimeoutError) Error() string {
	switch {
	case e.Connect && e.After == 0:
		return "a timeout of the HTTP client expired before a connection was obtained"
	case e.Connect:
		return fmt.Sprintf("connect timeout (%s) expired before a connection was obtained", e.After)
	case e.After == 0:
		return "a timeout of the HTTP client expired before the answer was read"
	}
	return fmt.Sprintf("answer timeout (%s) expired before the answer was read", e.After)
}

// Is reports whether target is ErrTimeout.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// StatusError is the error (wrapped) of a request that the AS answered with
// something other than a success: a status outside 2xx (3xx included:
// redirects are not followed), or a 2xx status with a body that is empty,
// not JSON, or larger than 64 KiB.
type StatusError struct {
	// Status is the HTTP status code of the answer.
	Status int
	// Excerpt is the start of the answer's body, at most about 200 bytes,
	// with non-printable bytes replaced and secrets redacted.
	Excerpt string
	// Reason says, for people, why the answer is not a success.
	Reason string
}

// Error gives the status, the reason it is a failure and the excerpt.
func (e *StatusError) Error() string {
	s := fmt.Sprintf("AS answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
	if e.Excerpt != "" {
		s += ": " + e.Excerpt
	}
	return s
}

// opError is what PutTxn and Ping return on failure: a message prefixed with
// the operation and redacted, wrapping the error it describes.
type opError struct {
	msg string
	err error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.err }

// failure returns the error for an operation that failed with err, its
// message with token and more redacted.
func failure(op string, err error, token string, more []string) error {
	msg := "wire: " + op + ": " + err.Error()
	return &opError{msg: string(redact([]byte(msg), token, more)), err: err}
}

// excerptMax is the most bytes of an answer an excerpt keeps, before the
// "..." that marks a cut.
const excerptMax = 200

// excerpt returns the start of answer for logs and Status: token and more
// redacted first (over the whole answer, so that an occurrence cut by the
// end of the excerpt is still caught), then at most excerptMax bytes of it, cut at a
// rune boundary and followed by "..." if anything was left out, with tab,
// newline and carriage return turned into spaces and every other
// non-printable rune, and every byte that is not valid UTF-8, into '?'.
func excerpt(answer []byte, token string, more []string) string {
	if string(answer) == "{}" { // the usual answer, without allocating
		return "{}"
	}
	b := redact(answer, token, more)
	out := make([]byte, 0, min(len(b), excerptMax)+3)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if len(out)+size > excerptMax {
			out = append(out, "..."...)
			break
		}
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, '?')
		case r == '\t' || r == '\n' || r == '\r':
			out = append(out, ' ')
		case !unicode.IsPrint(r):
			out = append(out, '?')
		default:
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return string(out)
}
