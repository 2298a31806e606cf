// Package wire is the HTTP side of delivery to application services: the
// homeserver half of the Matrix Application Service API.
//
// Body assembles a transaction body from stored items without re-encoding
// them, so a retried transaction is byte for byte the one first sent; the
// body's format (Format, FormatFor) says which keys beyond "events" the
// application service receives.
// Sender PUTs transactions (PUT /_matrix/app/v1/transactions/{txnId}) and
// POSTs pings (POST /_matrix/app/v1/ping, MSC2659) to an Endpoint.
//
// What counts as delivered is decided here and nowhere else: an answer with
// a 2xx status whose body is JSON (an AS answers {}). Everything else is a
// failure: another status (redirects are not followed), a 2xx answer that is
// empty, not JSON or larger than 64 KiB, a connection error, a timeout. A
// connect timeout and an answer timeout are enforced through each request's
// context, whatever http.Client the caller supplies.
//
// Tokens travel in request headers, and in the URL's query only when an
// Endpoint asks for the insecure legacy authentication (QueryAuth). Errors
// never contain them nor the URL, and the excerpts of answers that errors
// and Result carry have them replaced by "<redacted>", in case an AS echoes
// them back.
package wire
