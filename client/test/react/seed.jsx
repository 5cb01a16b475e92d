// The seed's LiveProvider, useLive and useLiveList, ported to JavaScript as
// written (only the WebSocket URL and the list's POST URL are props here),
// defects included. The React tests run their defect checks against it too,
// to show that each check fails on it.
import { createContext, useCallback, useContext, useEffect, useRef, useState } from "react";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

const LiveContext = createContext(null);

export function LiveProvider({ children, url }) {
  const [connection, setConnection] = useState({ status: "connecting", reconnectAttempt: 0 });
  const wsRef = useRef(null);
  const subscribersRef = useRef(new Map());
  const queryClient = useQueryClient();

  const connect = useCallback(() => {
    const ws = new WebSocket(new URL(url, location.href).href.replace(/^http/, "ws"));
    ws.onopen = () => {
      setConnection({ status: "connected", reconnectAttempt: 0 });
      subscribersRef.current.forEach((_, channel) => {
        ws.send(JSON.stringify({ type: "subscribe", channel }));
      });
    };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "data") {
        const subscribers = subscribersRef.current.get(message.channel);
        subscribers?.forEach((callback) => callback(message.data));
        if (message.queryKey) queryClient.setQueryData(message.queryKey, message.data);
      }
    };
    ws.onclose = () => {
      setConnection((prev) => ({ status: "disconnected", reconnectAttempt: prev.reconnectAttempt + 1 }));
      const delay = Math.min(1000 * Math.pow(2, connection.reconnectAttempt), 30000);
      setTimeout(connect, delay);
    };
    ws.onerror = () => {
      setConnection((prev) => ({ ...prev, status: "error" }));
    };
    wsRef.current = ws;
  }, [connection.reconnectAttempt, queryClient]);

  useEffect(() => {
    connect();
    return () => {
      wsRef.current?.close();
    };
  }, [connect]);

  const subscribe = useCallback((channel, callback) => {
    if (!subscribersRef.current.has(channel)) {
      subscribersRef.current.set(channel, new Set());
      if (wsRef.current?.readyState === WebSocket.OPEN) {
        wsRef.current.send(JSON.stringify({ type: "subscribe", channel }));
      }
    }
    subscribersRef.current.get(channel).add(callback);
    return () => {
      const subscribers = subscribersRef.current.get(channel);
      subscribers?.delete(callback);
      if (subscribers?.size === 0) {
        subscribersRef.current.delete(channel);
        wsRef.current?.send(JSON.stringify({ type: "unsubscribe", channel }));
      }
    };
  }, []);

  const publish = useCallback((channel, data) => {
    if (wsRef.current?.readyState === WebSocket.OPEN) {
      wsRef.current.send(JSON.stringify({ type: "publish", channel, data }));
    }
  }, []);

  return <LiveContext.Provider value={{ connection, subscribe, publish }}>{children}</LiveContext.Provider>;
}

export function useLive() {
  const context = useContext(LiveContext);
  if (!context) throw new Error("useLive must be used within a LiveProvider");
  return context;
}

export function useLiveList(channel, queryKey, fetcher, options = {}) {
  const { subscribe } = useLive();
  const queryClient = useQueryClient();
  const postURL = options.url ?? `/api/${channel}`;

  const query = useQuery({ queryKey, queryFn: fetcher, staleTime: Infinity });

  useEffect(() => {
    const unsubscribe = subscribe(channel, (update) => {
      queryClient.setQueryData(queryKey, (current = []) => {
        switch (update.type) {
          case "add":
            if (current.some((item) => item.id === update.item.id)) return current;
            return [update.item, ...current];
          case "update":
            return current.map((item) => (item.id === update.item.id ? { ...item, ...update.item } : item));
          case "remove":
            return current.filter((item) => item.id !== update.id);
          default:
            return current;
        }
      });
    });
    return unsubscribe;
  }, [channel, queryKey, subscribe, queryClient]);

  const addMutation = useMutation({
    mutationFn: async (newItem) => {
      const res = await fetch(postURL, { method: "POST", body: JSON.stringify(newItem) });
      return res.json();
    },
    onMutate: async (newItem) => {
      await queryClient.cancelQueries({ queryKey });
      const optimisticItem = { ...newItem, id: `temp-${Date.now()}`, _optimistic: true };
      queryClient.setQueryData(queryKey, (old = []) => [optimisticItem, ...old]);
      return { optimisticItem };
    },
    onSuccess: (realItem, _, context) => {
      queryClient.setQueryData(queryKey, (old = []) => old.map((item) => (item.id === context?.optimisticItem.id ? realItem : item)));
    },
    onError: (_, __, context) => {
      queryClient.setQueryData(queryKey, (old = []) => old.filter((item) => item.id !== context?.optimisticItem.id));
    },
  });

  return { items: query.data || [], isLoading: query.isLoading, add: addMutation.mutate, isAdding: addMutation.isPending };
}
