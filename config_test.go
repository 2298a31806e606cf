package scheduler

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/asdeliver/scheduler/astest"
)

func TestNewRejectsBadConfig(t *testing.T) {
	valid := func() Config { return testConfig(t, reg("a", nil, "@a_.*"), reg("b", nil, "@b_.*")) }
	cases := []struct {
		name     string
		mutate   func(*Config)
		sentinel error
		mentions []string
	}{
		{"no server name", func(c *Config) { c.ServerName = "" }, ErrInvalidConfig, []string{"ServerName"}},
		{"no store", func(c *Config) { c.Store = nil }, ErrInvalidConfig, []string{"Store", "sqlite.Open"}},
		{"negative poll interval", func(c *Config) { c.PollInterval = -time.Second }, ErrInvalidConfig, []string{"PollInterval"}},
		{"negative answer timeout", func(c *Config) { c.AnswerTimeout = -1 }, ErrInvalidConfig, []string{"AnswerTimeout"}},
		{"retry max below initial", func(c *Config) { c.RetryInitial, c.RetryMax = time.Minute, time.Second }, ErrInvalidConfig, []string{"RetryMax"}},
		{"negative events per txn", func(c *Config) { c.MaxEventsPerTxn = -1 }, ErrInvalidConfig, []string{"MaxEventsPerTxn"}},
		{"negative queue cap", func(c *Config) { c.MaxQueuedPerService = -1 }, ErrInvalidConfig, []string{"MaxQueuedPerService"}},
		{"jitter out of range", func(c *Config) { c.RetryJitter = 1.5 }, ErrInvalidConfig, []string{"RetryJitter"}},
		{"pool smaller than a txn", func(c *Config) { c.MaxPoolBytes = 10 }, ErrInvalidConfig, []string{"MaxPoolBytes"}},
		{"nil service", func(c *Config) { c.Services = append(c.Services, nil) }, ErrInvalidConfig, []string{"Services[2]"}},
		{"duplicate id", func(c *Config) {
			d := reg("a", nil)
			d.Source = "/etc/matrix/second.yaml"
			c.Services[0].Source = "/etc/matrix/first.yaml"
			c.Services = append(c.Services, d)
		}, ErrInvalidRegistration, []string{`"a"`, "first.yaml", "second.yaml"}},
		{"duplicate as_token", func(c *Config) {
			c.Services[1].ASToken = c.Services[0].ASToken
		}, ErrInvalidRegistration, []string{"Services[0]", "Services[1]", "as_token"}},
		{"bad regex", func(c *Config) {
			c.Services[0].Namespaces.Users = []Namespace{{Regex: "@(?!bot)"}}
		}, ErrInvalidRegistration, []string{"(?!bot)"}},
		{"missing hs_token", func(c *Config) { c.Services[0].HSToken = "" }, ErrInvalidRegistration, []string{"hs_token"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid()
			c.mutate(&cfg)
			s, err := New(cfg)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, c.sentinel)
			for _, m := range c.mentions {
				assert.Contains(t, err.Error(), m)
			}
			for _, r := range cfg.Services {
				if r != nil && r.ASToken != "" {
					assert.NotContains(t, err.Error(), r.ASToken, "tokens never appear in errors")
				}
			}
		})
	}
}

func TestNewFillsDefaults(t *testing.T) {
	cfg := testConfig(t)
	cfg.RetryInitial, cfg.RetryMax, cfg.PollInterval = 0, 0, 0
	s, err := New(cfg)
	require.NoError(t, err)
	c := s.cfg
	assert.Equal(t, DefaultPollInterval, c.PollInterval)
	assert.Equal(t, DefaultMaxEventsPerTxn, c.MaxEventsPerTxn)
	assert.Equal(t, DefaultMaxTxnBytes, c.MaxTxnBytes)
	assert.Equal(t, DefaultRetryInitial, c.RetryInitial)
	assert.Equal(t, DefaultRetryMax, c.RetryMax)
	assert.Equal(t, DefaultConnectTimeout, c.ConnectTimeout)
	assert.Equal(t, DefaultAnswerTimeout, c.AnswerTimeout)
	assert.Equal(t, DefaultMaxPoolEvents, c.MaxPoolEvents)
	assert.Equal(t, DefaultMaxPoolBytes, c.MaxPoolBytes)
	assert.NotNil(t, c.Logger)
}

func TestEnqueueRejectsBadEventsAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	as := astest.New(t, "tok")
	cfg := testConfig(t, reg("a", as, "@.*"))
	s := start(t, cfg)
	good := event("$good", "!r", "@x")
	mutate := func(f func(*Event)) Event {
		ev := event("$bad", "!r", "@x")
		f(&ev)
		return ev
	}
	setRaw := func(raw string) Event {
		return mutate(func(e *Event) { e.Raw = json.RawMessage(raw) })
	}
	cases := map[string]Event{
		"no event ID":          mutate(func(e *Event) { e.ID = "" }),
		"no room ID":           mutate(func(e *Event) { e.RoomID = "" }),
		"no sender":            mutate(func(e *Event) { e.Sender = "" }),
		"no type":              mutate(func(e *Event) { e.Type = "" }),
		"no raw":               mutate(func(e *Event) { e.Raw = nil }),
		"invalid JSON":         setRaw(`{"event_id":`),
		"JSON not an object":   setRaw(`["$bad"]`),
		"raw disagrees on ID":  setRaw(`{"event_id":"$other","room_id":"!r","sender":"@x","type":"m.room.message"}`),
		"raw lacks the sender": setRaw(`{"event_id":"$bad","room_id":"!r","type":"m.room.message"}`),
		"state key only in struct": mutate(func(e *Event) {
			sk := ""
			e.StateKey = &sk
		}),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			err := s.Enqueue(ctx, good, bad)
			require.ErrorIs(t, err, ErrInvalidEvent)
			var ie *InvalidEventError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, 1, ie.Index, "the error says which event")
		})
	}
	require.NoError(t, s.Enqueue(ctx, event("$last", "!r", "@x")))
	waitDelivered(t, as, 1)
	assert.Equal(t, []string{"$last"}, as.Delivered(), "no rejected call stored anything")
}
