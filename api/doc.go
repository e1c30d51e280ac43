// Package api serves VramCram's HTTP API with echo: job submission and
// status, results, health, models and the event stream.
//
// Every error is JSON of one shape, {"error":{"code","message"}}, with a
// stable code that scripts can branch on; see errors.go for the table. The
// package depends on the scheduler and the store only through the small
// interfaces declared in server.go.
package api
