package regfile

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// HasControl reports whether s has an ASCII control character, which a
// token may not have: it could not be sent in an HTTP header.
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// URLSafe reports whether Python's urllib.parse.quote leaves s as it is,
// which Synapse requires of sender_localpart.
func URLSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
			return false
		}
	}
	return true
}

// CheckURL checks that raw is an absolute http or https URL with a host,
// a port from 1 to 65535 if any, and no user information, query or
// fragment, and returns it without
// trailing '/'; or it returns why not. The reason shows the URL without its
// password, and without any user information when that is what is wrong.
func CheckURL(raw string) (string, string) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if strings.Contains(raw, "@") {
			return "", "is not a valid URL (" + err.Error() + ")" // it may hold a password: not shown
		}
		return "", strconv.Quote(raw) + " is not a valid URL (" + err.Error() + ")"
	}
	// As written, unless it holds user information, whose password
	// must not be shown: url.URL would percent-escape a placeholder.
	shown := strconv.Quote(raw)
	if u.User != nil {
		shown = strconv.Quote(u.Redacted())
	}
	if u.Scheme == "unix" {
		return checkUnixURL(raw, u, shown)
	}
	switch {
	case strings.HasPrefix(raw, "/") || u.Scheme == "" && !strings.Contains(raw, "."):
		return "", shown + " is not absolute: it needs http:// or https://"
	case !strings.Contains(raw, "://") && u.Scheme != "http" && u.Scheme != "https":
		// localhost:9000 parses as scheme "localhost", bridge.example.org
		// as a path.
		return "", shown + " is not absolute, it has no scheme: write " + strconv.Quote("http://"+raw) + " (or https://)"
	case u.Scheme == "":
		return "", shown + " is not absolute: it needs http:// or https://"
	case u.Scheme != "http" && u.Scheme != "https":
		return "", shown + " uses " + u.Scheme + ": only http, https and unix (a socket: unix:///run/as.sock) are supported"
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return "", shown + " has no host"
	case !validHost(u.Hostname()):
		return "", shown + " has host " + strconv.Quote(u.Hostname()) + ", which is not a host name or an IP address (a placeholder left in?)"
	case !validPort(u.Port()):
		return "", shown + " has port " + strconv.Quote(u.Port()) + ": a port is a number from 1 to 65535"
	case u.User != nil:
		// Credentials in a URL end up in logs, and the scheduler would
		// not send them: an application service authenticates the
		// homeserver by hs_token alone.
		bare := *u
		bare.User = nil
		return "", strconv.Quote(bare.String()) + ` has credentials ("user:password@" before the host), which would end up in logs ` +
			`and which the homeserver does not send: remove them; the application service checks hs_token instead`
	case u.RawQuery != "" || u.ForceQuery:
		return "", shown + " has a query ('?'): a base URL cannot have one"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", shown + " has a fragment ('#'): a base URL cannot have one"
	}
	return strings.TrimRight(raw, "/"), ""
}

// checkUnixURL checks a unix:// URL, u parsed from raw: the application
// service listens on the Unix domain socket at the URL's path, which must
// be absolute (unix:///run/bridge.sock, as Dendrite writes it); requests
// go to the socket's root. It returns raw unchanged.
func checkUnixURL(raw string, u *url.URL, shown string) (string, string) {
	switch {
	case u.Host != "" || u.User != nil:
		return "", shown + " names a host: a unix URL is unix:// followed by the absolute path of the socket, " +
			"such as unix:///run/bridge.sock (three slashes)"
	case !strings.HasPrefix(u.Path, "/") || u.Opaque != "" || u.Path == "/":
		return "", shown + " has no absolute socket path: write unix:///run/bridge.sock (three slashes)"
	case u.RawQuery != "" || u.ForceQuery:
		return "", shown + " has a query ('?'): a socket URL cannot have one"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", shown + " has a fragment ('#'): a socket URL cannot have one"
	case "unix://"+u.Path != raw:
		return "", shown + " is not written plainly: use unix:// and the socket's path, without escapes"
	}
	return raw, ""
}

// validPort reports whether port, the port of a URL, is empty (the
// scheme's default) or a number from 1 to 65535.
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n >= 1
}

// validHost reports whether host, the host of a URL without its port, is
// an IP address or a DNS name: letters, digits, '-', '_' and dots.
func validHost(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return true
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return host != ""
}
