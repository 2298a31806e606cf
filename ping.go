package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asdeliver/scheduler/internal/wire"
)

// Ping checks that the application service serviceID is reachable, as a
// homeserver does for POST /_matrix/client/v1/appservice/{appserviceId}/ping
// (MSC2659): it sends POST {url}/_matrix/app/v1/ping with
// {"transaction_id": transactionID} ({} when transactionID is empty) and
// the hs_token, under Config.ConnectTimeout and Config.AnswerTimeout, and
// returns the round-trip time. On success it also calls ServiceUp, so a
// service that was down gets its retry at once.
//
// Errors: ErrUnknownService for a service that is not configured, ErrNoURL
// for one with url: null, ErrNotStarted before Start and ErrStopped once
// Stop has begun; ErrTimeout when the service did not connect or answer in
// time; a *StatusError (ErrBadStatus) with the service's answer when it
// answered with something else than a 2xx status and a JSON body;
// ErrUnreachable, wrapping the network error, when no answer came
// otherwise; and ctx's error when ctx ended first. No error contains the
// tokens or, with Config.LegacyQueryAuth, the URL. A homeserver's ping
// endpoint maps ErrTimeout to M_CONNECTION_TIMEOUT, ErrBadStatus to
// M_BAD_STATUS (with StatusError.Status and Answer), ErrUnreachable to
// M_CONNECTION_FAILED, and ErrNoURL to M_URL_NOT_SET.
func (s *Scheduler) Ping(ctx context.Context, serviceID, transactionID string) (time.Duration, error) {
	var reg *Registration
	roster := s.current()
	for _, r := range roster.regs {
		if r.ID == serviceID {
			reg = r
			break
		}
	}
	if reg == nil {
		return 0, fmt.Errorf("error pinging %q: %w", serviceID, ErrUnknownService)
	}
	if reg.URL == "" {
		return 0, fmt.Errorf("error pinging %q: %w", serviceID, ErrNoURL)
	}
	if err := s.accepting(); err != nil {
		return 0, err
	}
	rtt, res, err := s.sender.Ping(ctx, roster.deliverers[serviceID].endpoint(), transactionID)
	if err != nil {
		return 0, fmt.Errorf("error pinging %q: %w", serviceID, pingError(ctx, res, err))
	}
	s.ServiceUp(serviceID)
	return rtt, nil
}

// pingError maps an error of wire.Sender.Ping to the package's errors.
func pingError(ctx context.Context, res wire.Result, err error) error {
	var se *wire.StatusError
	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return err
	case errors.Is(err, wire.ErrTimeout):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.As(err, &se):
		return &StatusError{Status: se.Status, Answer: res.Excerpt, Reason: se.Reason}
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}
