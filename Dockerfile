# syntax=docker/dockerfile:1
# Build a static keybridge and ship it on distroless, as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" -o /out/keybridge ./cmd/keybridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keybridge /usr/local/bin/keybridge
COPY config/keybridge.example.yaml /etc/keybridge/keybridge.yaml
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keybridge"]
CMD ["serve", "-c", "/etc/keybridge/keybridge.yaml"]
