// Package interest decides which application services want what, as
// Synapse decides it: by the regexes of their namespaces (users, room
// aliases, room IDs), their own user, what they opted in to, and, through
// a homeserver's directory, the aliases and members of a room and the
// rooms of a user.
//
// The root package decides interest once, in Enqueue, before anything is
// stored, and stores the answer with the item: a restart never re-routes
// it. Matching runs for every service and every item, so it allocates
// nothing and checks a literal prefix before running a regex. Regexes read
// \w, \d, \s and \b as Python 3's re does, in Unicode (see Pattern).
package interest
