package cluster

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type Topics struct{ In, Changelog, Replies, Meta, Egress string }

func TopicNames(name string) Topics {
	p := "shardfn." + name + "."
	return Topics{In: p + "in", Changelog: p + "changelog", Replies: p + "replies", Meta: p + "meta", Egress: p + "egress"}
}

type TopicOptions struct {
	Partitions        int32
	ReplicationFactor int16
	MinInsyncReplicas int
	InRetention       time.Duration
}

func EnsureTopics(ctx context.Context, cl *kgo.Client, name string, o TopicOptions) (Topics, int32, error) {
	t := TopicNames(name)
	p := o.Partitions
	if p == 0 {
		p = 256
	}
	adm := kadm.NewClient(cl)
	compact := "compact"
	adm.CreateTopic(ctx, p, -1, nil, t.In)
	adm.CreateTopic(ctx, p, -1, map[string]*string{"cleanup.policy": &compact}, t.Changelog)
	adm.CreateTopic(ctx, 1, -1, nil, t.Replies)
	adm.CreateTopic(ctx, 1, -1, nil, t.Meta)
	adm.CreateTopic(ctx, 1, -1, nil, t.Egress)
	return t, p, nil
}
