// Command greeter is the first function of the README: a greeter that
// counts visits in durable state and answers requests.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/shardfn/shardfn/engine"
)

var visits = engine.ValueSpec{Name: "visits", Type: engine.TypeLong}

func greeter(ctx engine.Context, msg engine.Message) error {
	n, _, err := ctx.GetInt64(visits)
	if err != nil {
		return err
	}
	if err := ctx.SetInt64(visits, n+1); err != nil {
		return err
	}
	name, err := msg.AsString()
	if err != nil {
		return err
	}
	ctx.Reply(engine.String(fmt.Sprintf("hello %s, visit %d", name, n+1)))
	ctx.Egress("greetings", engine.String(name))
	return nil
}

func main() {
	e, err := engine.Open(engine.Options{DataDir: "./data"}, engine.FunctionSpec{
		Namespace: "example", Type: "greeter",
		States:   []engine.ValueSpec{visits},
		Function: engine.FunctionFunc(greeter),
	})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := e.Request(ctx, engine.Address{Namespace: "example", Type: "greeter", ID: "bob"}, engine.String("Bob"))
	if err != nil {
		panic(err)
	}
	s, _ := reply.AsString()
	fmt.Println(s) // hello Bob, visit 1 (2 on the next run: the state is durable)
}
